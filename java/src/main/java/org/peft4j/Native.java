package org.peft4j;

import java.util.function.Supplier;
import org.bytedeco.javacpp.Loader;
import org.peft4j.internal.Peft4jNative;

/** The boundary to the generated JavaCPP classes: every native call goes through here. */
final class Native {
    private Native() {}

    /** Loads the core and the JNI library from the jar (JavaCPP extracts them to its cache). */
    static void load() {
        Loader.load(Peft4jNative.class);
    }

    static <T> T call(Supplier<T> body) {
        try {
            return body.get();
        } catch (PeftException e) {
            throw e;
        } catch (RuntimeException e) {
            // JavaCPP rethrows the facade's std::runtime_error as a plain RuntimeException.
            throw PeftException.fromNative(e);
        }
    }

    static void run(Runnable body) {
        call(() -> {
            body.run();
            return null;
        });
    }
}
