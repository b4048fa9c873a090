package org.peft4j.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.peft4j.Parity;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(
        name = "parity",
        mixinStandardHelpOptions = true,
        description = "Run reference cases (HF transformers + PEFT outputs) against peft4j: one PASS/FAIL/SKIP line per "
                + "case and check, then 'N passed, M failed'. Exit 0 only when nothing failed.")
final class ParityCommand implements Callable<Integer> {
    @Parameters(paramLabel = "DIR", description = "directory with cases/<name>/case.json (e.g. python-parity/golden)")
    Path dir;

    @Option(names = "--case", paramLabel = "NAME", description = "run only this case (repeatable)")
    List<String> cases = new ArrayList<>();

    @Option(names = "--save-adapters", paramLabel = "OUT",
            description = "after training, write each case's adapter in PEFT's format to OUT/<case>")
    Path saveAdapters;

    @Override
    public Integer call() {
        Parity.Result result = Parity.run(dir, cases, saveAdapters, line -> {
            System.out.println(line);
            System.out.flush();
        });
        System.out.println(result.summary());
        return result.failed() == 0 ? 0 : 1;
    }
}
