package org.peft4j;

import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Supplier;

/**
 * The lock of one native model, shared by every Java object that reaches it: the {@link BaseModel}, the
 * {@link PeftModel} wrapping it (and its inference view), a {@link BaseModel} from
 * {@link PeftModel#mergeAndUnload()} and the {@link Trainer}s of it. Calls that only read the model (forward,
 * generate, queries) run concurrently; calls that change it (adapters, merging, training steps) run alone.
 */
final class ModelLock {
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();

    /** {@code owner.call(body, inputs)} beside other readers. */
    <T> T shared(NativeResource owner, Supplier<T> body, NativeResource... inputs) {
        return locked(lock.readLock(), owner, body, inputs);
    }

    void shared(NativeResource owner, Runnable body, NativeResource... inputs) {
        shared(owner, returningNull(body), inputs);
    }

    /** {@code owner.call(body, inputs)} with no other call on the model in flight. */
    <T> T exclusive(NativeResource owner, Supplier<T> body, NativeResource... inputs) {
        return locked(lock.writeLock(), owner, body, inputs);
    }

    void exclusive(NativeResource owner, Runnable body, NativeResource... inputs) {
        exclusive(owner, returningNull(body), inputs);
    }

    private static Supplier<Void> returningNull(Runnable body) {
        return () -> {
            body.run();
            return null;
        };
    }

    private static <T> T locked(Lock lock, NativeResource owner, Supplier<T> body, NativeResource... inputs) {
        // Locked before pinning: a call that waited for the lock while its model was closed fails as closed.
        lock.lock();
        try {
            return owner.call(body, inputs);
        } finally {
            lock.unlock();
        }
    }
}
