package org.peft4j;

import java.util.List;
import org.peft4j.internal.Peft4jNative;

/** Facts about the native core loaded into this JVM. */
public final class Peft4j {
    private Peft4j() {}

    /** peft4j's version. */
    public static String version() {
        return Native.call(Peft4jNative::version);
    }

    /** The libtorch version the core was built against. */
    public static String torchVersion() {
        return Native.call(Peft4jNative::torchVersion);
    }

    /** libtorch's intra-op threads: the cores this process may use, or {@code PEFT4J_NUM_THREADS}. */
    public static int numThreads() {
        return Native.call(Peft4jNative::numThreads);
    }

    /** The {@code peft_type}s of every method the core implements, sorted. */
    public static List<String> peftTypes() {
        return List.of(Native.call(Peft4jNative::peftTypes).split(","));
    }

    /** Path of the BLAS library libtorch calls (OpenBLAS on Debian when set up as the README says). */
    public static String blasLibrary() {
        return Native.call(Peft4jNative::blasLibrary);
    }
}
