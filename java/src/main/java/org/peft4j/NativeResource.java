package org.peft4j;

import java.lang.ref.Cleaner;
import org.bytedeco.javacpp.Pointer;

/**
 * Base of every public class that holds native memory: {@link #close()} frees it at once, and a {@link Cleaner}
 * frees it when a caller forgets.
 */
public abstract class NativeResource implements AutoCloseable {
    private static final Cleaner CLEANER = Cleaner.create();

    static {
        // JavaCPP's own pointer classes (FloatPointer, ...) need the native library before first use.
        Native.load();
    }

    private final Pointer handle;
    private final Cleaner.Cleanable cleanable;
    private final String what;

    NativeResource(Pointer handle, String what) {
        this.handle = handle;
        this.what = what;
        // The action must not reach `this`, or the resource would never become unreachable.
        this.cleanable = CLEANER.register(this, handle::close);
    }

    @SuppressWarnings("unchecked")
    <P extends Pointer> P handle() {
        if (handle.isNull()) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, what + " is closed");
        }
        return (P) handle;
    }

    /** Whether {@link #close()} has been called. */
    public boolean isClosed() {
        return handle.isNull();
    }

    @Override
    public void close() {
        cleanable.clean();
    }
}
