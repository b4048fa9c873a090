package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The parity runner over the golden cases, as `./peft4j parity python-parity/golden` runs it. */
class GoldenParityTest {
    @Test
    void everyGoldenCheckPassesOrIsSkippedWithAReason() {
        List<String> lines = new ArrayList<>();
        Parity.Result result = Parity.run(TestFiles.golden(), List.of(), lines::add);
        List<String> failures = lines.stream().filter(l -> l.startsWith("FAIL")).toList();
        assertEquals(List.of(), failures);
        assertEquals(0, result.failed());
        // every case with base_logits (all five architectures) checks its base model
        long basePasses = lines.stream().filter(l -> l.startsWith("PASS ") && l.endsWith(" base")).count();
        assertTrue(basePasses >= 35, "base passes: " + basePasses);
        assertTrue(lines.stream().filter(l -> l.startsWith("SKIP")).allMatch(l -> l.matches("SKIP \\S+ \\S+: .+")));
        assertEquals(result.passed() + result.failed() + result.skipped(), lines.size());
    }
}
