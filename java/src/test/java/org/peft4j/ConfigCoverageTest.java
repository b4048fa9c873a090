package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.provider.Arguments;
import org.peft4j.config.AdapterConfig;

/**
 * Every method the core registers has a Java config class in {@code org.peft4j.config} and a row in
 * {@link TunerConfigsTest} (a golden row or a generated one), and every row's method is registered: a method added to
 * the core without its Java side fails here, naming it.
 */
class ConfigCoverageTest {
    private static Set<String> rowTypes(Stream<Arguments> rows) {
        Set<String> types = new TreeSet<>();
        rows.forEach(row -> {
            Object[] values = row.get();
            AdapterConfig config = (AdapterConfig) values[values.length - 1];
            assertEquals("org.peft4j.config", config.getClass().getPackageName(), config.getClass().getName());
            types.add(config.peftType());
        });
        return types;
    }

    @Test
    void everyRegisteredMethodHasAConfigClassAndATunerConfigsTestRow() {
        Set<String> rows = rowTypes(TunerConfigsTest.goldenConfigs());
        rows.addAll(rowTypes(TunerConfigsTest.generatedConfigs()));
        Set<String> registered = new TreeSet<>(Peft4j.peftTypes());
        Set<String> missing = new TreeSet<>(registered);
        missing.removeAll(rows);
        assertTrue(missing.isEmpty(), "registered methods without a config class and a TunerConfigsTest row: " + missing);
        Set<String> unknown = new TreeSet<>(rows);
        unknown.removeAll(registered);
        assertTrue(unknown.isEmpty(), "TunerConfigsTest rows of methods the core does not register: " + unknown);
    }
}
