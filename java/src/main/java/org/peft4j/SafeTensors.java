package org.peft4j;

import java.nio.file.Path;
import java.util.Map;
import org.peft4j.internal.Peft4jNative;

/** Reads and writes safetensors files through the native core (validated reads, atomic writes). */
public final class SafeTensors {
    private SafeTensors() {}

    /**
     * Reads every tensor of a file. The file is memory-mapped privately: the tensors never write to it. A malformed
     * file raises a {@link PeftException} of kind FORMAT naming the file, the tensor and the problem.
     */
    public static NamedTensors read(Path path) {
        return Native.call(() -> new NamedTensors(Peft4jNative.readSafetensors(path.toString())));
    }

    /** Writes atomically: a crash leaves the previous file or the new one, never a mix. */
    public static void write(Path path, NamedTensors tensors) {
        tensors.write(path);
    }

    /** Writes the given tensors and metadata atomically. */
    public static void write(Path path, Map<String, Tensor> tensors, Map<String, String> metadata) {
        try (NamedTensors all = new NamedTensors()) {
            tensors.forEach(all::put);
            metadata.forEach(all::putMetadata);
            write(path, all);
        }
    }

    /** The listing {@code peft4j inspect} prints for a safetensors file, model directory or adapter directory. */
    public static String inspect(Path path) {
        return Native.call(() -> Peft4jNative.inspect(path.toString()));
    }
}
