package org.peft4j.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.stream.Stream;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.PeftException;

class TrainingReportTest {
    @TempDir
    Path dir;

    // A trainer's log history as the core writes it: three steps and an evaluation after the second.
    private static final String HISTORY = """
            [{"step": 1, "epoch": 0.3333, "loss": 4.0, "learning_rate": 0.001, "grad_norm": 0.5, "tokens_per_second": 1000},
             {"step": 2, "epoch": 0.6667, "loss": 2.0, "learning_rate": 0.001, "grad_norm": 0.5, "tokens_per_second": 1000},
             {"step": 2, "eval_loss": 1.5},
             {"step": 3, "epoch": 1.0, "loss": 1.3333, "learning_rate": 0.001, "grad_norm": 0.5}]""";

    private static TrainingReport threeSteps() {
        TrainingReport report = new TrainingReport();
        report.addLogHistory(HISTORY);
        report.put("exact_match_after", 0.9);
        return report;
    }

    @Test
    void writesMetricsJsonWithoutNaNAndAPng() throws Exception {
        threeSteps().write(dir);
        JsonNode metrics = new ObjectMapper().readTree(dir.resolve("metrics.json").toFile());
        assertEquals(0.9, metrics.get("summary").get("exact_match_after").asDouble());
        assertEquals(3, metrics.get("train").size());
        assertEquals(2.0, metrics.get("train").get(1).get("loss").asDouble());
        JsonNode eval = metrics.get("eval").get(0);
        assertEquals(1.5, eval.get("eval_loss").asDouble());
        assertFalse(eval.has("eval_accuracy"), "an undefined accuracy is left out, JSON has no NaN");
        BufferedImage plot = ImageIO.read(new ByteArrayInputStream(Files.readAllBytes(dir.resolve("loss.png"))));
        assertEquals(800, plot.getWidth());
        assertEquals(480, plot.getHeight());
        assertEquals(PosixFilePermissions.fromString("rw-r--r--"), Files.getPosixFilePermissions(dir.resolve("loss.png")));
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(2, files.count(), "only the two files, no temporary ones left");
        }
    }

    @Test
    void takesStepsAndEvaluationsFromTheLogHistory() {
        TrainingReport report = threeSteps();
        assertEquals(3, report.steps().size());
        assertEquals(2, report.steps().get(1).step());
        assertEquals(2.0, report.steps().get(1).loss());
        assertEquals(1000, report.steps().get(0).tokensPerSecond());
        assertTrue(Double.isNaN(report.steps().get(2).tokensPerSecond()), "a value the entry lacks is NaN");
        assertEquals(1, report.evaluations().size());
        assertEquals(2, report.evaluations().get(0).step());
        assertTrue(Double.isNaN(report.evaluations().get(0).accuracy()));
        PeftException e = assertThrows(PeftException.class, () -> new TrainingReport().addLogHistory("[{"));
        assertTrue(e.getMessage().contains("log history"), e.getMessage());
    }
}
