package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SafeTensorsRoundTripTest {
    @TempDir
    Path dir;

    @Test
    void everyDtypeRoundTripsWithMetadata() throws Exception {
        double[] values = {-2.5, -1, 0, 0.5, 1, 3};
        Path file = dir.resolve("all.safetensors");
        try (Tensor f64 = Tensor.of(values, 2, 3); NamedTensors all = new NamedTensors()) {
            for (DType dtype : DType.values()) {
                try (Tensor t = f64.to(dtype)) {
                    all.put(dtype.name().toLowerCase(), t);
                }
            }
            all.putMetadata("format", "pt").putMetadata("note", "ünïcode");
            SafeTensors.write(file, all);
        }
        try (NamedTensors back = SafeTensors.read(file)) {
            assertEquals(DType.values().length, back.size());
            assertEquals(Map.of("format", "pt", "note", "ünïcode"), back.metadata());
            for (DType dtype : DType.values()) {
                try (Tensor t = back.get(dtype.name().toLowerCase())) {
                    assertEquals(dtype, t.dtype());
                    assertArrayEquals(new long[] {2, 3}, t.shape());
                    double[] got = t.toDoubleArray();
                    for (int i = 0; i < values.length; i++) {
                        if (dtype == DType.U8 && values[i] < 0) {
                            continue; // negative to unsigned is undefined in C++: not a contract
                        }
                        double want = switch (dtype) {
                            case BOOL -> values[i] != 0 ? 1 : 0;
                            case U8 -> (long) values[i];
                            case I64, I32, I16, I8 -> (long) values[i];
                            default -> values[i];
                        };
                        assertEquals(want, got[i], 0.0, dtype + "[" + i + "]");
                    }
                }
            }
        }
        List<Path> leftovers = Files.list(dir).filter(p -> p.getFileName().toString().contains(".tmp.")).toList();
        assertEquals(List.of(), leftovers, "temporary files left behind");
    }

    @Test
    void arraysAndDirectBuffersCarryTheSameBytes() {
        float[] data = {1.5f, -2f, 3.25f, 0f};
        ByteBuffer buffer = ByteBuffer.allocateDirect(16).order(ByteOrder.nativeOrder());
        for (float v : data) {
            buffer.putFloat(v);
        }
        buffer.flip();
        try (Tensor a = Tensor.of(data, 2, 2); Tensor b = Tensor.fromBuffer(buffer, DType.F32, 4)) {
            assertArrayEquals(data, a.toFloatArray());
            assertArrayEquals(data, b.toFloatArray());
            ByteBuffer out = a.toByteBuffer();
            assertEquals(16, out.capacity());
            assertEquals(3.25f, out.getFloat(8));
        }
        try (Tensor bits = Tensor.of(new short[] {0x3fc0, (short) 0xc000}, DType.BF16, 2)) {
            assertArrayEquals(new float[] {1.5f, -2f}, bits.toFloatArray());
        }
    }

    @Test
    void aFailedWriteKeepsThePreviousFile() throws Exception {
        Path file = dir.resolve("keep.safetensors");
        try (Tensor t = Tensor.of(new float[] {1, 2}, 2)) {
            SafeTensors.write(file, Map.of("a", t), Map.of());
        }
        byte[] before = Files.readAllBytes(file);
        // Writing into a path whose directory does not exist fails before touching anything.
        try (Tensor t = Tensor.of(new float[] {3}, 1)) {
            PeftException e = assertThrows(PeftException.class,
                    () -> SafeTensors.write(dir.resolve("missing/x.safetensors"), Map.of("a", t), Map.of()));
            assertEquals(PeftException.Kind.NOT_FOUND, e.kind());
            // A directory where the file should be is refused, and the directory stays.
            PeftException onDir = assertThrows(PeftException.class, () -> SafeTensors.write(dir, Map.of("a", t), Map.of()));
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, onDir.kind());
        }
        assertArrayEquals(before, Files.readAllBytes(file));
    }
}
