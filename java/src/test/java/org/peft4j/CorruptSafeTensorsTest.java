package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** Each corruption of a safetensors file is refused with a FORMAT error naming the file and the problem. */
class CorruptSafeTensorsTest {
    @TempDir
    Path dir;

    private static final String GOOD_A = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    private static final String GOOD_B = "\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]}";

    static byte[] file(String header, int dataBytes) {
        return file(header.getBytes(StandardCharsets.UTF_8), header.getBytes(StandardCharsets.UTF_8).length, dataBytes);
    }

    static byte[] file(byte[] header, long declaredLength, int dataBytes) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(declaredLength).array());
        out.writeBytes(header);
        out.writeBytes(new byte[dataBytes]);
        return out.toByteArray();
    }

    static Stream<Arguments> corruptions() {
        byte[] valid = file("{" + GOOD_A + "," + GOOD_B + "}", 16);
        return Stream.of(
                Arguments.of("empty file", new byte[0], "shorter than the 8-byte header length"),
                Arguments.of("cut inside the length", Arrays.copyOf(valid, 5), "shorter than the 8-byte header length"),
                Arguments.of("length beyond the file", file("{}".getBytes(), 4096, 0), "exceeds"),
                Arguments.of("truncated data", Arrays.copyOf(valid, valid.length - 4), "beyond the data section"),
                Arguments.of("header not JSON", file("{\"a\": [1, 2", 0), "not valid JSON"),
                Arguments.of("header an array", file("[1,2,3]", 0), "does not start with '{'"),
                Arguments.of("unknown dtype", file("{\"a\":{\"dtype\":\"F9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                        "unknown or unsupported dtype 'F9'"),
                Arguments.of("negative dimension", file("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                        "non-negative"),
                Arguments.of("shape lies about size", file("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                        "data_offsets span 8 bytes"),
                Arguments.of("end before begin", file("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8),
                        "end before begin"),
                Arguments.of("offset out of range", file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[64,72]}}", 8),
                        "beyond the data section"),
                Arguments.of("overlapping tensors", file("{" + GOOD_A
                        + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "overlaps"),
                Arguments.of("gap between tensors", file("{" + GOOD_A
                        + ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", 16), "belong to no tensor"),
                Arguments.of("trailing bytes", file("{" + GOOD_A + "}", 12), "trailing bytes"),
                Arguments.of("duplicate name", file("{" + GOOD_A + "," + GOOD_A + "}", 8), "appears twice"),
                Arguments.of("missing data_offsets", file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8),
                        "has no 'data_offsets'"),
                Arguments.of("metadata not strings", file("{\"__metadata__\":{\"k\":1}," + GOOD_A + "}", 8),
                        "__metadata__ value of 'k'"),
                Arguments.of("shape not an array", file("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8),
                        "shape is not an array"));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("corruptions")
    void corruptFileIsRejectedClearly(String name, byte[] bytes, String problem) throws Exception {
        Path path = dir.resolve(name.replace(' ', '_') + ".safetensors");
        Files.write(path, bytes);
        PeftException e = assertThrows(PeftException.class, () -> SafeTensors.read(path).close());
        assertEquals(PeftException.Kind.FORMAT, e.kind(), e.getMessage());
        assertTrue(e.getMessage().contains(path.toString()), "message names the file: " + e.getMessage());
        assertTrue(e.getMessage().contains(problem), "message says '" + problem + "': " + e.getMessage());
        // Tensors named in the header are named in the message when one is at fault.
        if (problem.contains("dtype") || problem.contains("span")) {
            assertTrue(e.getMessage().contains("tensor 'a'"), e.getMessage());
        }
    }

    @Test
    void missingFileIsNotFound() {
        Path path = dir.resolve("nope.safetensors");
        PeftException e = assertThrows(PeftException.class, () -> SafeTensors.read(path));
        assertEquals(PeftException.Kind.NOT_FOUND, e.kind());
        assertTrue(e.getMessage().contains(path.toString()));
    }

    @Test
    void directoryIsNotAFile() {
        PeftException e = assertThrows(PeftException.class, () -> SafeTensors.read(dir));
        assertEquals(PeftException.Kind.INVALID_ARGUMENT, e.kind());
    }
}
