package org.peft4j.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import org.peft4j.PeftException;

/** Checks on an output directory made before any work, so that a bad one fails fast and leaves nothing behind. */
final class OutputDirs {
    private OutputDirs() {}

    /** A directory that exists or can be created: not a file, and not below a file. */
    static void requireUsable(Path dir) {
        for (Path p = dir.toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.exists(p) && !Files.isDirectory(p)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "output directory '" + dir + "' "
                        + (p.equals(dir.toAbsolutePath()) ? "is a file" : "is below the file '" + p + "'"));
            }
        }
    }
}
