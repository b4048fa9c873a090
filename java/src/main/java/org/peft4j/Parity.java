package org.peft4j;

import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;
import org.peft4j.internal.Peft4jNative.ParityRunHandle;

/**
 * Runs reference cases (python-parity/README.md) against the core: one line per case and check
 * ({@code PASS case check}, {@code FAIL case check: why}, {@code SKIP case check: why}).
 */
public final class Parity {
    private Parity() {}

    /** Counts of one run; {@link #summary()} is the last line the CLI prints. */
    public record Result(int passed, int failed, int skipped, String summary) {}

    /**
     * Runs the named cases under {@code dir}/cases (every case when {@code cases} is empty), handing each line to
     * {@code out} as soon as its case finishes.
     */
    public static Result run(Path dir, List<String> cases, Consumer<String> out) {
        return run(dir, cases, null, out);
    }

    /**
     * As {@link #run(Path, List, Consumer)}; with {@code saveAdapters} non-null, each trained single-adapter case's
     * adapter is written in PEFT's format to {@code saveAdapters/<case>} (a "save" check), for HF PEFT to load back.
     */
    public static Result run(Path dir, List<String> cases, Path saveAdapters, Consumer<String> out) {
        String save = saveAdapters == null ? "" : saveAdapters.toString();
        ParityRunHandle run = Native.call(() -> new ParityRunHandle(dir.toString(), String.join(",", cases), save));
        try {
            long count = Native.call(run::caseCount);
            for (long i = 0; i < count; i++) {
                long index = i;
                String lines = Native.call(() -> run.runCase(index));
                lines.lines().forEach(out);
            }
            return new Result(run.passed(), run.failed(), run.skipped(), run.summary());
        } finally {
            run.close();
        }
    }
}
