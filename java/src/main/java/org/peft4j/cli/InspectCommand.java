package org.peft4j.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.peft4j.SafeTensors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

@Command(
        name = "inspect",
        mixinStandardHelpOptions = true,
        description = "List the tensors (name, dtype, shape) of a safetensors file, an HF model directory or a PEFT "
                + "adapter directory (with its adapter_config.json fields).")
final class InspectCommand implements Callable<Integer> {
    @Parameters(paramLabel = "PATH", description = "safetensors file, model directory or adapter directory")
    Path path;

    @Override
    public Integer call() {
        System.out.print(SafeTensors.inspect(path));
        System.out.flush();
        return 0;
    }
}
