package org.peft4j.cli;

import java.nio.file.Path;
import org.peft4j.Peft4j;
import org.peft4j.PeftException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The {@code peft4j} command line. */
@Command(
        name = "peft4j",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Parameter-efficient fine-tuning on the JVM over a native libtorch core.",
        subcommands = {TrainCommand.class, EvalCommand.class, GenerateCommand.class, MergeCommand.class,
                DemoCommand.class, InspectCommand.class, ParityCommand.class, IntrinsicDimensionCommand.class,
                CommandLine.HelpCommand.class})
public final class Main {

    public static void main(String[] args) {
        System.exit(run(args));
    }

    static {
        // SLF4J's simple logger, configured before the first logger exists: short lines on standard error (HfTokenizer
        // keeps DJL's start-up chatter to warnings).
        setUnlessGiven("org.slf4j.simpleLogger.showThreadName", "false");
        setUnlessGiven("org.slf4j.simpleLogger.showShortLogName", "true");
    }

    private static void setUnlessGiven(String key, String value) {
        if (System.getProperty(key) == null) {
            System.setProperty(key, value);
        }
    }

    /** Runs the CLI and returns its exit code (tests call this instead of main). */
    public static int run(String... args) {
        // A repeated single-value option takes its last value, as most command lines do.
        CommandLine cli = new CommandLine(new Main()).setExecutionExceptionHandler(new ErrorHandler())
                .setOverwrittenOptionsAllowed(true);
        Path config = ConfigFile.find(args);
        if (config != null) {
            CommandLine command = args.length > 0 ? cli.getSubcommands().get(args[0]) : null;
            try {
                if (command == null) {
                    throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "--config follows a command: "
                            + "peft4j train --config FILE");
                }
                command.setDefaultValueProvider(ConfigFile.read(config, command.getCommandSpec()));
            } catch (PeftException e) {
                cli.getErr().println("peft4j" + (command != null ? " " + args[0] : "") + ": error: " + e.getMessage());
                cli.getErr().flush();
                return 1;
            }
        }
        return cli.execute(args);
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {"peft4j " + Peft4j.version() + " (libtorch " + Peft4j.torchVersion() + ", "
                    + Peft4j.numThreads() + " threads, BLAS " + Peft4j.blasLibrary() + ")"};
        }
    }
}
