package org.peft4j;

/**
 * An error from peft4j. Native errors keep the core's message, which names the file, tensor or field and the
 * problem; {@link #kind()} says what kind of problem it is.
 */
public class PeftException extends RuntimeException {
    /** What went wrong, as the core classifies it. */
    public enum Kind {
        /** A file could not be opened, read, written or renamed. */
        IO,
        /** A file exists but its contents are malformed or inconsistent. */
        FORMAT,
        /** A value passed by the caller cannot work (shape, dtype, name, option). */
        INVALID_ARGUMENT,
        /** A named thing (file, tensor, module, adapter) does not exist. */
        NOT_FOUND,
        /** Valid input that peft4j does not handle. */
        UNSUPPORTED,
        /** NaN or infinity where a finite value is required. */
        NUMERICAL,
        /** An error raised inside libtorch. */
        TORCH,
        /** A bug: please report it with the message. */
        INTERNAL,
        /** The object was closed (possibly by another thread) before the call started. */
        CLOSED
    }

    private final Kind kind;

    public PeftException(Kind kind, String message) {
        super(message);
        this.kind = kind;
    }

    public PeftException(Kind kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    public Kind kind() {
        return kind;
    }

    /** Maps a message thrown by the native facade ("KIND: message") to a typed exception. */
    static PeftException fromNative(RuntimeException e) {
        String message = e.getMessage() == null ? "" : e.getMessage();
        int colon = message.indexOf(": ");
        if (colon > 0) {
            try {
                return new PeftException(Kind.valueOf(message.substring(0, colon)), message.substring(colon + 2), e);
            } catch (IllegalArgumentException notAKind) {
                // fall through: not a facade message
            }
        }
        return new PeftException(Kind.INTERNAL, message.isEmpty() ? e.toString() : message, e);
    }
}
