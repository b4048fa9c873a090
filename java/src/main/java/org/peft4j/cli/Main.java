package org.peft4j.cli;

import org.peft4j.Peft4j;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The {@code peft4j} command line. */
@Command(
        name = "peft4j",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Parameter-efficient fine-tuning on the JVM over a native libtorch core.",
        subcommands = {InspectCommand.class, ParityCommand.class, CommandLine.HelpCommand.class})
public final class Main {

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs the CLI and returns its exit code (tests call this instead of main). */
    public static int run(String... args) {
        return new CommandLine(new Main())
                .setExecutionExceptionHandler(new ErrorHandler())
                .execute(args);
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {"peft4j " + Peft4j.version() + " (libtorch " + Peft4j.torchVersion() + ", "
                    + Peft4j.numThreads() + " threads, BLAS " + Peft4j.blasLibrary() + ")"};
        }
    }
}
