package org.peft4j;

import java.lang.ref.Cleaner;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;
import org.bytedeco.javacpp.Pointer;

/**
 * Base of every public class that holds native memory: {@link #close()} frees it, and a {@link Cleaner} frees it
 * when a caller forgets.
 *
 * <p>Closing is safe at any time, from any thread: every native call pins the resources it uses, and a resource
 * closed while calls are in flight is freed when the last of them returns. Calls that start after {@link #close()}
 * throw a {@link PeftException} of kind {@link PeftException.Kind#CLOSED}.
 */
public abstract class NativeResource implements AutoCloseable {
    private static final Cleaner CLEANER = Cleaner.create();
    // The closed flag of `state`; the bits below it count the calls in flight.
    private static final int CLOSED = 1 << 30;

    static {
        // JavaCPP's own pointer classes (FloatPointer, ...) need the native library before first use.
        Native.load();
    }

    private final Pointer handle;
    private final Cleaner.Cleanable cleanable;
    private final String what;
    private final AtomicInteger state = new AtomicInteger();

    NativeResource(Pointer handle, String what) {
        this.handle = handle;
        this.what = what;
        // The action must not reach `this`, or the resource would never become unreachable.
        this.cleanable = CLEANER.register(this, handle::close);
    }

    /**
     * The native handle, for use inside {@link #call}: only a pinned resource may be used, since another thread may
     * close it at any moment.
     */
    @SuppressWarnings("unchecked")
    final <P extends Pointer> P handle() {
        int s = state.get();
        if ((s & ~CLOSED) == 0) {
            if ((s & CLOSED) != 0) {
                throw closed();
            }
            throw new IllegalStateException(what + " used outside a native call that pins it");
        }
        return (P) handle;
    }

    /**
     * Runs {@code body}, which may use the handles of this resource and of {@code others} (null entries are skipped),
     * pinned so that a concurrent {@link #close()} frees none of them before it returns. Native errors come out as
     * {@link PeftException}s.
     */
    final <T> T call(Supplier<T> body, NativeResource... others) {
        pin();
        int pinned = 0;
        try {
            for (; pinned < others.length; pinned++) {
                if (others[pinned] != null) {
                    others[pinned].pin();
                }
            }
            return Native.call(body);
        } finally {
            for (int i = 0; i < pinned; i++) {
                if (others[i] != null) {
                    others[i].unpin();
                }
            }
            unpin();
        }
    }

    final void run(Runnable body, NativeResource... others) {
        call(() -> {
            body.run();
            return null;
        }, others);
    }

    private void pin() {
        int s;
        do {
            s = state.get();
            if ((s & CLOSED) != 0) {
                throw closed();
            }
        } while (!state.compareAndSet(s, s + 1));
    }

    private void unpin() {
        if (state.decrementAndGet() == CLOSED) {
            cleanable.clean();
        }
    }

    private PeftException closed() {
        return new PeftException(PeftException.Kind.CLOSED, what + " is closed");
    }

    /** Whether {@link #close()} has been called. */
    public boolean isClosed() {
        return (state.get() & CLOSED) != 0;
    }

    /**
     * Frees the native memory: at once when no call is using it, else as soon as the calls in flight return. Later
     * calls throw a {@link PeftException} of kind {@link PeftException.Kind#CLOSED}. Closing twice does nothing.
     */
    @Override
    public void close() {
        if (state.getAndUpdate(s -> s | CLOSED) == 0) {
            cleanable.clean();
        }
    }
}
