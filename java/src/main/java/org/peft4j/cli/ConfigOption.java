package org.peft4j.cli;

import java.nio.file.Path;
import picocli.CommandLine.Option;

/** {@code --config FILE} for --help; {@link Main#run} reads the file before parsing (see {@link ConfigFile}). */
final class ConfigOption {
    @Option(names = "--config", paramLabel = "FILE",
            description = "JSON or YAML file of options by their long names (learning_rate: 2e-4); flags override it")
    Path config;
}
