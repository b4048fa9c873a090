package org.peft4j.demo;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import java.nio.file.Paths;
import org.junit.jupiter.api.Test;
import org.peft4j.BaseModel;
import org.peft4j.NamedTensors;
import org.peft4j.SafeTensors;
import org.peft4j.Tensor;
import org.peft4j.text.HfTokenizer;

/** The shipped demo model and its tokenizer against what transformers and tokenizers computed (demo/pretrain.py). */
class DemoModelTest {
    static Path demo() {
        return Paths.get(System.getProperty("peft4j.sourceDir", ".")).toAbsolutePath().resolve("demo");
    }

    @Test
    void tokenizerMatchesPythonTokenizersIdForIdAndDecodesBack() throws Exception {
        JsonNode cases = new ObjectMapper().readTree(demo().resolve("reference/tokenizer_ids.json").toFile());
        assertTrue(cases.size() >= 3);
        try (HfTokenizer tokenizer = HfTokenizer.load(demo().resolve("model"))) {
            for (JsonNode c : cases) {
                String text = c.get("text").asText();
                long[] expected = new ObjectMapper().convertValue(c.get("ids"), long[].class);
                long[] plain = new ObjectMapper().convertValue(c.get("ids_without_special"), long[].class);
                assertArrayEquals(expected, tokenizer.encode(text, true), text);
                assertArrayEquals(plain, tokenizer.encode(text, false), text);
                assertEquals(text, tokenizer.decode(tokenizer.encode(text, true), true));
            }
            assertEquals(1, tokenizer.bosTokenId().getAsLong());
            assertEquals(2, tokenizer.eosTokenId().getAsLong());
        }
    }

    @Test
    void logitsMatchTransformers() {
        try (NamedTensors reference = SafeTensors.read(demo().resolve("reference/logits.safetensors"));
             BaseModel model = BaseModel.load(demo().resolve("model"));
             Tensor ids = reference.get("input_ids");
             Tensor expected = reference.get("logits");
             Tensor logits = model.forward(ids, null)) {
            assertArrayEquals(expected.shape(), logits.shape());
            float[] e = expected.toFloatArray();
            float[] a = logits.toFloatArray();
            double worst = 0;
            for (int i = 0; i < e.length; i++) {
                worst = Math.max(worst, Math.abs(e[i] - a[i]) / (1e-4 + 1e-4 * Math.abs(e[i])));
            }
            assertTrue(worst <= 1, "logits differ from transformers' by more than atol 1e-4 + rtol 1e-4 (" + worst + ")");
        }
    }
}
