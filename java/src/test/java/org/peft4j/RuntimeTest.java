package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class RuntimeTest {
    @Test
    void coreUsesOpenBlasAndEveryCore() {
        assertTrue(Peft4j.blasLibrary().contains("openblas"), "BLAS: " + Peft4j.blasLibrary());
        if (System.getenv("PEFT4J_NUM_THREADS") == null) {
            assertEquals(Runtime.getRuntime().availableProcessors(), Peft4j.numThreads());
        }
        assertEquals(Peft4j.version(), "0.1.0");
    }
}
