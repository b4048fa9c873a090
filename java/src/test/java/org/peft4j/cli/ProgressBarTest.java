package org.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.jupiter.api.Test;

class ProgressBarTest {
    @Test
    void plainLinesEveryNthStepAndTheLastWhenNotATerminal() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        ProgressBar bar = new ProgressBar(new PrintStream(bytes, true, StandardCharsets.UTF_8), false, 2);
        for (int step = 1; step <= 5; step++) {
            bar.update(step, 5, 1.0 / step, 100);
        }
        bar.finish();
        List<String> lines = bytes.toString(StandardCharsets.UTF_8).lines().toList();
        assertEquals(3, lines.size(), lines.toString());
        assertTrue(lines.get(0).startsWith("step 2/5 loss 0.5000 tok/s 100 ETA "), lines.get(0));
        assertTrue(lines.get(2).startsWith("step 5/5 loss 0.2000"), lines.get(2));
        assertFalse(bytes.toString(StandardCharsets.UTF_8).contains("\r"));
    }

    @Test
    void aTerminalLineIsRedrawnInPlaceAndMessagesClearIt() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        ProgressBar bar = new ProgressBar(new PrintStream(bytes, true, StandardCharsets.UTF_8), true, 1);
        bar.update(1, 4, 2.0, 10);
        bar.message("step 1: eval_loss 1.0000");
        bar.update(4, 4, 1.0, 10);
        bar.finish();
        String out = bytes.toString(StandardCharsets.UTF_8);
        assertTrue(out.startsWith("\r[=======>                      ] 1/4 loss 2.0000"), out);
        assertTrue(out.contains("\rstep 1: eval_loss 1.0000\n"), out);
        assertTrue(out.endsWith("[==============================] 4/4 loss 1.0000 tok/s 10 ETA 0:00\n"), out);
    }

    @Test
    void clockShowsMinutesOrHours() {
        assertEquals("0:42", ProgressBar.clock(42));
        assertEquals("2:05", ProgressBar.clock(125));
        assertEquals("1:00:01", ProgressBar.clock(3601));
    }
}
