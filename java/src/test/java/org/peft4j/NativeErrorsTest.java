package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** C++ exceptions of every origin reach Java as typed PeftExceptions, and the JVM keeps working. */
class NativeErrorsTest {

    @Test
    void torchErrorsBecomeTorchKind() {
        try (Tensor t = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 2, 3)) {
            PeftException e = assertThrows(PeftException.class, () -> t.reshape(4, 4));
            assertEquals(PeftException.Kind.TORCH, e.kind(), e.getMessage());
            assertTrue(e.getMessage().contains("invalid for input of size 6"), e.getMessage());
            // the tensor is still usable after the failed call
            try (Tensor ok = t.reshape(3, 2)) {
                assertArrayEquals(new long[] {3, 2}, ok.shape());
            }
        }
    }

    @Test
    void coreErrorsKeepTheirKind() {
        PeftException size = assertThrows(PeftException.class, () -> Tensor.of(new float[] {1, 2, 3}, 2, 2));
        assertEquals(PeftException.Kind.INVALID_ARGUMENT, size.kind());
        assertTrue(size.getMessage().contains("needs 16"), size.getMessage());
        try (NamedTensors empty = new NamedTensors()) {
            PeftException missing = assertThrows(PeftException.class, () -> empty.get("w"));
            assertEquals(PeftException.Kind.NOT_FOUND, missing.kind());
            assertTrue(missing.getMessage().contains("'w'"));
        }
        PeftException notInt = assertThrows(PeftException.class, () -> {
            try (Tensor f = Tensor.of(new float[] {1}, 1)) {
                f.toLongArray();
            }
        });
        assertEquals(PeftException.Kind.INVALID_ARGUMENT, notInt.kind());
    }

    @Test
    void closedResourcesRefuseUse() {
        Tensor t = Tensor.of(new float[] {1}, 1);
        t.close();
        t.close(); // idempotent
        PeftException e = assertThrows(PeftException.class, t::shape);
        assertTrue(e.getMessage().contains("closed"));
        assertEquals("Tensor(closed)", t.toString());
    }
}
