package org.peft4j.cli;

import java.io.PrintStream;
import java.time.Duration;

/**
 * Training progress on standard error: on a terminal one line redrawn in place ({@code [=====>    ] 120/300 loss
 * 1.234 tok/s 5100 ETA 0:42}); otherwise (a log file, a pipe) a plain line every {@code plainEvery} steps and at
 * the last one.
 */
final class ProgressBar {
    private static final int WIDTH = 30;

    private final PrintStream out;
    private final boolean terminal;
    private final int plainEvery;
    private final long startNanos = System.nanoTime();
    private int lastLength;
    private long firstStep = -1;  // the step before the first update: a resumed run starts past 0

    ProgressBar(PrintStream out, boolean terminal, int plainEvery) {
        this.out = out;
        this.terminal = terminal;
        this.plainEvery = Math.max(1, plainEvery);
    }

    static ProgressBar onStderr(long maxSteps) {
        return new ProgressBar(System.err, System.console() != null, (int) Math.max(1, maxSteps / 20));
    }

    void update(long step, long maxSteps, double loss, double tokensPerSecond) {
        if (firstStep < 0) {
            firstStep = step - 1;
        }
        double elapsed = (System.nanoTime() - startNanos) / 1e9;
        double eta = step > firstStep ? elapsed / (step - firstStep) * (maxSteps - step) : 0;
        String metrics = String.format("%d/%d loss %.4f tok/s %.0f ETA %s", step, maxSteps, loss, tokensPerSecond,
                clock(eta));
        if (terminal) {
            int filled = maxSteps > 0 ? (int) (WIDTH * step / maxSteps) : 0;
            String bar = "[" + "=".repeat(filled) + (filled < WIDTH ? ">" + " ".repeat(WIDTH - filled - 1) : "") + "] ";
            String line = bar + metrics;
            out.print("\r" + line + " ".repeat(Math.max(0, lastLength - line.length())));
            lastLength = line.length();
            out.flush();
        } else if (step % plainEvery == 0 || step == maxSteps) {
            out.println("step " + metrics);
        }
    }

    /** A line printed between updates (an evaluation result) without breaking the bar. */
    void message(String line) {
        if (terminal && lastLength > 0) {
            out.print("\r" + " ".repeat(lastLength) + "\r");
            lastLength = 0;
        }
        out.println(line);
        out.flush();
    }

    void finish() {
        if (terminal && lastLength > 0) {
            out.println();
            lastLength = 0;
        }
        out.flush();
    }

    static String clock(double seconds) {
        Duration d = Duration.ofSeconds(Math.round(seconds));
        return d.toHours() > 0 ? String.format("%d:%02d:%02d", d.toHours(), d.toMinutesPart(), d.toSecondsPart())
                : String.format("%d:%02d", d.toMinutesPart(), d.toSecondsPart());
    }
}
