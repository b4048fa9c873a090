package org.peft4j.bench;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.peft4j.BaseModel;
import org.peft4j.Peft4j;
import org.peft4j.PeftModel;
import org.peft4j.Tensor;
import org.peft4j.config.LoraConfig;

/**
 * One caller against several: the same number of forward calls on one shared {@link PeftModel} (LoRA r 8 on every
 * linear layer), first from one thread, then split over {@code threads} Java threads. A benchmark to run by hand,
 * not a test:
 *
 * <pre>
 * java -cp "target/test-classes:target/classes:target/lib/*" org.peft4j.bench.ConcurrentForward \
 *     [MODEL_DIR [FORWARDS [THREADS [LENGTH [ROUNDS]]]]]
 * </pre>
 *
 * Defaults: demo/model, 400 forwards, 8 threads, 64 tokens, 3 rounds. After a warm-up, each round times both; one line
 * per run with the wall time. Background load on the same cores moves single runs several-fold (OpenMP teams wait on
 * preempted threads): compare rounds, and runs made side by side.
 */
public final class ConcurrentForward {
    private ConcurrentForward() {}

    public static void main(String[] args) throws Exception {
        Path modelDir = Path.of(args.length > 0 ? args[0] : "demo/model");
        int forwards = args.length > 1 ? Integer.parseInt(args[1]) : 400;
        int threads = args.length > 2 ? Integer.parseInt(args[2]) : 8;
        int length = args.length > 3 ? Integer.parseInt(args[3]) : 64;
        int rounds = args.length > 4 ? Integer.parseInt(args[4]) : 3;
        long[] ids = new long[length];
        for (int i = 0; i < length; i++) {
            ids[i] = 3 + (7L * i) % 700;
        }
        System.out.printf("peft4j %s, %d intra-op threads, %d forwards of 1 x %d tokens on %s%n", Peft4j.version(),
                Peft4j.numThreads(), forwards, length, modelDir);
        try (BaseModel base = BaseModel.load(modelDir);
                PeftModel model = PeftModel.create(base, "default",
                        LoraConfig.builder().r(8).loraAlpha(16).allLinear().build());
                Tensor input = Tensor.of(ids, 1, length)) {
            // Warm-up: first-call allocations, BLAS and OpenMP start-up, and the JIT, whose compiler threads would
            // otherwise share the cores with the first timed run.
            run(model, input, 200);
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            try {
                for (int round = 1; round <= rounds; round++) {
                    long start = System.nanoTime();
                    run(model, input, forwards);
                    report(round, "1 caller", forwards, start);
                    start = System.nanoTime();
                    List<Future<?>> done = new ArrayList<>();
                    for (int t = 0; t < threads; t++) {
                        int share = forwards / threads + (t < forwards % threads ? 1 : 0);
                        done.add(pool.submit(() -> run(model, input, share)));
                    }
                    for (Future<?> f : done) {
                        f.get();
                    }
                    report(round, threads + " threads", forwards, start);
                }
            } finally {
                pool.shutdown();
            }
        }
    }

    private static void run(PeftModel model, Tensor input, int count) {
        for (int i = 0; i < count; i++) {
            model.forward(input, null).close();
        }
    }

    private static void report(int round, String what, int forwards, long start) {
        double seconds = (System.nanoTime() - start) / 1e9;
        System.out.printf("round %d  %-10s %7.2f s  (%.2f ms per forward)%n", round, what, seconds,
                1e3 * seconds / forwards);
    }
}
