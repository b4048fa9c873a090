package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Every tensor of every golden safetensors file, read through the core, against checksums that an independent
 * pure-Python reader (python-parity/safetensors_checksums.py) computes from the same bytes.
 */
class GoldenFilesTest {

    private static JsonNode independentChecksums() throws IOException, InterruptedException {
        Path script = TestFiles.sourceDir().resolve("python-parity/safetensors_checksums.py");
        Process process = new ProcessBuilder("python3", script.toString(), TestFiles.golden().toString())
                .redirectError(ProcessBuilder.Redirect.INHERIT)
                .start();
        byte[] out = process.getInputStream().readAllBytes();
        assertEquals(0, process.waitFor(), "checksum script failed");
        return new ObjectMapper().readTree(out);
    }

    @Test
    void everyGoldenTensorMatchesTheIndependentReader() throws Exception {
        JsonNode expected = independentChecksums();
        assertTrue(expected.size() >= 80, "expected the golden models, adapters and io files, found " + expected.size());
        int tensors = 0;
        List<String> mismatches = new ArrayList<>();
        for (Iterator<Map.Entry<String, JsonNode>> files = expected.fields(); files.hasNext(); ) {
            Map.Entry<String, JsonNode> file = files.next();
            try (NamedTensors read = SafeTensors.read(TestFiles.golden().resolve(file.getKey()))) {
                assertEquals(file.getValue().size(), read.size(), file.getKey());
                for (Iterator<Map.Entry<String, JsonNode>> it = file.getValue().fields(); it.hasNext(); ) {
                    Map.Entry<String, JsonNode> entry = it.next();
                    String where = file.getKey() + ":" + entry.getKey();
                    JsonNode want = entry.getValue();
                    try (Tensor t = read.get(entry.getKey())) {
                        assertEquals(want.get("dtype").asText(), t.dtype().name(), where);
                        long[] shape = new long[want.get("shape").size()];
                        for (int i = 0; i < shape.length; i++) {
                            shape[i] = want.get("shape").get(i).asLong();
                        }
                        assertArrayEquals(shape, t.shape(), where);
                        double[] values = t.toDoubleArray();
                        assertEquals(want.get("count").asLong(), values.length, where);
                        double sum = 0;
                        double absSum = 0;
                        for (double v : values) {
                            sum += v;
                            absSum += Math.abs(v);
                        }
                        double tolerance = 1e-9 * Math.max(1.0, want.get("abs_sum").asDouble());
                        if (Math.abs(sum - want.get("sum").asDouble()) > tolerance
                                || Math.abs(absSum - want.get("abs_sum").asDouble()) > tolerance
                                || (values.length > 0 && (values[0] != want.get("first").asDouble()
                                        || values[values.length - 1] != want.get("last").asDouble()))) {
                            mismatches.add(where);
                        }
                        tensors++;
                    }
                }
            }
        }
        assertTrue(mismatches.isEmpty(), "tensors differing from the independent reader: " + mismatches);
        assertTrue(tensors > 2000, "read " + tensors + " tensors");
    }
}
