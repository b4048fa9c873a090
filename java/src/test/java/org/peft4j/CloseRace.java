package org.peft4j;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.peft4j.text.HfTokenizer;
import org.peft4j.config.LoraConfig;

/**
 * The child JVM of {@link CloseRaceTest}: races {@code close()} against calls in flight, {@code ITERATIONS} times.
 * The tokenizer scenario loads MODEL_DIR's tokenizer.json, the others MODEL_DIR as a model.
 * Worker threads loop over one kind of call on shared objects until a call fails; once every worker has finished
 * a call, the main thread closes the objects in a random order. The only failure a worker may see is a
 * {@link PeftException} of kind CLOSED; anything else is printed as "UNEXPECTED ..." and the exit code is 1.
 *
 * <pre>java -cp TEST_CLASS_PATH org.peft4j.CloseRace forward|generate|trainer|tokenizer ITERATIONS MODEL_DIR WORK_DIR SEED</pre>
 */
final class CloseRace {
    private final List<String> unexpected = Collections.synchronizedList(new ArrayList<>());

    public static void main(String[] args) throws Exception {
        String scenario = args[0];
        int iterations = Integer.parseInt(args[1]);
        Path model = Path.of(args[2]);
        Path work = Path.of(args[3]);
        Random random = new Random(Long.parseLong(args[4]));
        CloseRace race = new CloseRace();
        for (int i = 0; i < iterations && race.unexpected.isEmpty(); i++) {
            race.once(scenario, model, work.resolve("run-" + i), random);
        }
        race.unexpected.forEach(u -> System.err.println("UNEXPECTED " + u));
        System.out.println("races " + iterations);
        System.exit(race.unexpected.isEmpty() ? 0 : 1);
    }

    private void once(String scenario, Path modelDir, Path outputDir, Random random) throws InterruptedException {
        List<AutoCloseable> resources = new ArrayList<>();
        List<Runnable> calls = new ArrayList<>();
        if (scenario.equals("tokenizer")) {
            HfTokenizer tokenizer = HfTokenizer.load(modelDir);
            resources.add(tokenizer);
            for (int t = 0; t < 4; t++) {
                calls.add(() -> tokenizer.decode(tokenizer.encode("Question: Where does Zuva live?", true), true));
            }
            race(scenario, resources, calls, random);
            return;
        }
        BaseModel base = BaseModel.load(modelDir);
        PeftModel peft = PeftModel.create(base, "default",
                LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj").build());
        Tensor ids = Tensor.of(new long[] {1, 15, 27, 3, 99, 4, 250, 8}, 1, 8);
        resources.addAll(List.of(peft, base, ids));
        switch (scenario) {
            case "forward" -> {
                for (int t = 0; t < 4; t++) {
                    calls.add(() -> peft.forward(ids, null).close());
                }
            }
            case "generate" -> {
                GenerationConfig config = GenerationConfig.builder().maxNewTokens(6).build();
                for (int t = 0; t < 4; t++) {
                    calls.add(() -> peft.generate(ids, null, config).close());
                }
            }
            case "trainer" -> {
                TrainingData data = new TrainingData();
                for (int n = 0; n < 4; n++) {
                    long[] sequence = random.longs(12, 0, 256).toArray();
                    data.addSequence(sequence, sequence);
                }
                Trainer trainer = Trainer.builder().model(peft).trainData(data).batchSize(2).maxSteps(1_000_000)
                        .outputDir(outputDir).build();
                resources.add(trainer);
                resources.add(data);
                calls.add(() -> trainer.step());
                calls.add(() -> trainer.metrics());
                calls.add(() -> peft.forward(ids, null).close());
            }
            default -> throw new IllegalArgumentException("unknown scenario " + scenario);
        }
        race(scenario, resources, calls, random);
    }

    private void race(String scenario, List<AutoCloseable> resources, List<Runnable> calls, Random random)
            throws InterruptedException {
        CountDownLatch running = new CountDownLatch(calls.size());
        List<Thread> workers = new ArrayList<>();
        for (Runnable call : calls) {
            Thread worker = new Thread(() -> loop(call, running));
            workers.add(worker);
            worker.start();
        }
        if (!running.await(60, TimeUnit.SECONDS)) {
            unexpected.add(scenario + ": the workers did not get going within 60 s");
        }
        Thread.sleep(random.nextInt(4));
        Collections.shuffle(resources, random);
        for (AutoCloseable resource : resources) {
            try {
                resource.close();
            } catch (Exception e) {
                unexpected.add(scenario + ": close() threw " + e);
            }
        }
        for (Thread worker : workers) {
            worker.join(TimeUnit.SECONDS.toMillis(60));
            if (worker.isAlive()) {
                unexpected.add(scenario + ": a worker still runs 60 s after close()");
            }
        }
    }

    private void loop(Runnable call, CountDownLatch running) {
        boolean counted = false;
        try {
            call.run();
            running.countDown();
            counted = true;
            while (true) {
                call.run();
            }
        } catch (PeftException e) {
            if (e.kind() != PeftException.Kind.CLOSED || !e.getMessage().endsWith(" is closed")) {
                unexpected.add(e.kind() + ": " + e.getMessage());
            }
        } catch (Throwable e) {
            unexpected.add(e.toString());
        } finally {
            // A worker that failed on its first call must not hold the main thread for a minute.
            if (!counted) {
                running.countDown();
            }
        }
    }
}
