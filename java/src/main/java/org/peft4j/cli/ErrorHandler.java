package org.peft4j.cli;

import org.peft4j.PeftException;
import picocli.CommandLine;

/** One clear line on standard error and a non-zero exit, never a stack trace, for any failure. */
final class ErrorHandler implements CommandLine.IExecutionExceptionHandler {
    @Override
    public int handleExecutionException(Exception e, CommandLine command, CommandLine.ParseResult parseResult) {
        String message = e instanceof PeftException ? e.getMessage() : e.toString();
        command.getErr().println("peft4j " + command.getCommandName() + ": error: " + message);
        command.getErr().flush();
        return 1;
    }
}
