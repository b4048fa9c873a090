package org.peft4j.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
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

class TrainingReportTest {
    @TempDir
    Path dir;

    private static TrainingReport threeSteps() {
        TrainingReport report = new TrainingReport();
        for (int step = 1; step <= 3; step++) {
            report.addStep(new TrainingReport.Step(step, step / 3.0, 4.0 / step, 1e-3, 0.5, 1000));
        }
        report.addEvaluation(new TrainingReport.Evaluation(2, 1.5, Double.NaN));
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
    void aResumedRunKeepsTheEarlierStepsUpToTheCheckpoint() {
        threeSteps().write(dir);
        TrainingReport resumed = new TrainingReport();
        resumed.continueFrom(dir.resolve(TrainingReport.METRICS_FILE), 2);
        assertEquals(2, resumed.steps().size());
        assertEquals(2.0, resumed.steps().get(1).loss());
        assertEquals(1, resumed.evaluations().size());
        assertTrue(Double.isNaN(resumed.evaluations().get(0).accuracy()));
        TrainingReport fresh = new TrainingReport();
        fresh.continueFrom(dir.resolve("absent.json"), 2);
        assertTrue(fresh.steps().isEmpty());
    }
}
