package org.peft4j;

import java.nio.file.Path;
import java.nio.file.Paths;

/** Locations shared by the tests: the repository and its golden parity cases. */
final class TestFiles {
    private TestFiles() {}

    static Path sourceDir() {
        return Paths.get(System.getProperty("peft4j.sourceDir", ".")).toAbsolutePath().normalize();
    }

    static Path golden() {
        return sourceDir().resolve("python-parity/golden");
    }
}
