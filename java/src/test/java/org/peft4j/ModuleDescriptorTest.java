package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.lang.module.ModuleDescriptor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;

/** The module descriptor exports the public API packages only: not the CLI, the report writer or the binding. */
class ModuleDescriptorTest {
    @Test
    void exportsOnlyThePublicPackages() throws Exception {
        Path compiled = Path.of(ModuleDescriptorTest.class.getProtectionDomain().getCodeSource().getLocation().toURI())
                .getParent().resolve("classes/module-info.class");
        ModuleDescriptor descriptor;
        try (InputStream in = Files.newInputStream(compiled)) {
            descriptor = ModuleDescriptor.read(in);
        }
        assertEquals("org.peft4j", descriptor.name());
        Set<String> exported = new TreeSet<>();
        for (ModuleDescriptor.Exports e : descriptor.exports()) {
            assertTrue(e.targets().isEmpty(), e + " is qualified");
            exported.add(e.source());
        }
        assertEquals(Set.of("org.peft4j", "org.peft4j.config", "org.peft4j.data", "org.peft4j.text"), exported);
        // The binding is opened to JavaCPP alone, the CLI to picocli alone.
        for (ModuleDescriptor.Opens o : descriptor.opens()) {
            assertEquals(1, o.targets().size(), o.toString());
        }
    }
}
