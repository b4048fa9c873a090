package org.peft4j;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.ShortPointer;
import org.peft4j.internal.Peft4jNative.TensorHandle;

/**
 * A tensor held by the native core. Create one from a Java array or a direct buffer, read it back into either;
 * close it (or use try-with-resources) to free its memory. Tensors never change after creation, so threads may
 * share them; closing one while another thread uses it is safe (see {@link NativeResource#close()}).
 */
public final class Tensor extends NativeResource {

    Tensor(TensorHandle handle) {
        super(handle, "tensor");
    }

    TensorHandle nativeHandle() {
        return handle();
    }

    public static Tensor of(float[] data, long... shape) {
        try (FloatPointer p = new FloatPointer(data)) {
            return fromPointer(p, (long) data.length * 4, DType.F32, shape);
        }
    }

    public static Tensor of(double[] data, long... shape) {
        try (DoublePointer p = new DoublePointer(data)) {
            return fromPointer(p, (long) data.length * 8, DType.F64, shape);
        }
    }

    public static Tensor of(long[] data, long... shape) {
        try (LongPointer p = new LongPointer(data)) {
            return fromPointer(p, (long) data.length * 8, DType.I64, shape);
        }
    }

    public static Tensor of(int[] data, long... shape) {
        try (IntPointer p = new IntPointer(data)) {
            return fromPointer(p, (long) data.length * 4, DType.I32, shape);
        }
    }

    /** Raw 16-bit values, read as {@code dtype} (I16, F16 or BF16 bit patterns). */
    public static Tensor of(short[] data, DType dtype, long... shape) {
        requireSize(dtype, 2);
        try (ShortPointer p = new ShortPointer(data)) {
            return fromPointer(p, (long) data.length * 2, dtype, shape);
        }
    }

    /** Raw bytes, read as {@code dtype} (I8, U8 or BOOL). */
    public static Tensor of(byte[] data, DType dtype, long... shape) {
        requireSize(dtype, 1);
        try (BytePointer p = new BytePointer(data)) {
            return fromPointer(p, data.length, dtype, shape);
        }
    }

    /** Copies a direct buffer's remaining bytes (native byte order for multi-byte types), read as {@code dtype}. */
    public static Tensor fromBuffer(ByteBuffer buffer, DType dtype, long... shape) {
        if (buffer == null || !buffer.isDirect()) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "buffer must be a direct ByteBuffer");
        }
        return fromPointer(new BytePointer(buffer), buffer.remaining(), dtype, shape);
    }

    private static Tensor fromPointer(Pointer data, long nbytes, DType dtype, long[] shape) {
        return Native.call(() -> new Tensor(TensorHandle.fromData(data, nbytes, dtype.name(), shape, shape.length)));
    }

    private static void requireSize(DType dtype, int size) {
        if (dtype.byteSize() != size) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    "dtype " + dtype + " has " + dtype.byteSize() + "-byte elements, the data has " + size);
        }
    }

    public DType dtype() {
        return DType.valueOf(call(() -> nativeHandle().dtype()));
    }

    public long[] shape() {
        return call(() -> {
            TensorHandle h = nativeHandle();
            long[] shape = new long[h.ndim()];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = h.size(i);
            }
            return shape;
        });
    }

    public long numel() {
        return call(() -> nativeHandle().numel());
    }

    /** "cpu", "cuda:0", ... */
    public String device() {
        return call(() -> nativeHandle().device());
    }

    /** A converted copy (or this tensor's data when the type already matches). */
    public Tensor to(DType dtype) {
        return call(() -> new Tensor(nativeHandle().to(dtype.name())));
    }

    public Tensor reshape(long... shape) {
        return call(() -> new Tensor(nativeHandle().reshape(shape, shape.length)));
    }

    /** The values as floats, converting from any floating-point dtype. */
    public float[] toFloatArray() {
        requireFloating();
        try (Tensor f = to(DType.F32); FloatPointer p = new FloatPointer(checkedLength(f))) {
            f.copyInto(p, p.capacity() * 4);
            float[] out = new float[(int) p.capacity()];
            p.get(out);
            return out;
        }
    }

    /** The values as doubles, converting from any dtype. */
    public double[] toDoubleArray() {
        try (Tensor d = to(DType.F64); DoublePointer p = new DoublePointer(checkedLength(d))) {
            d.copyInto(p, p.capacity() * 8);
            double[] out = new double[(int) p.capacity()];
            p.get(out);
            return out;
        }
    }

    /** The values as longs, converting from any integer or boolean dtype. */
    public long[] toLongArray() {
        if (dtype().isFloatingPoint()) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    "toLongArray() needs an integer tensor, this one is " + dtype());
        }
        try (Tensor l = to(DType.I64); LongPointer p = new LongPointer(checkedLength(l))) {
            l.copyInto(p, p.capacity() * 8);
            long[] out = new long[(int) p.capacity()];
            p.get(out);
            return out;
        }
    }

    /** The raw bytes, in native byte order, in a new direct buffer. */
    public ByteBuffer toByteBuffer() {
        long nbytes = call(() -> nativeHandle().nbytes());
        if (nbytes > Integer.MAX_VALUE) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "tensor of " + nbytes + " bytes exceeds a ByteBuffer");
        }
        ByteBuffer out = ByteBuffer.allocateDirect((int) nbytes).order(ByteOrder.nativeOrder());
        copyInto(new Pointer(out).capacity(nbytes), nbytes);
        return out;
    }

    private void copyInto(Pointer destination, long nbytes) {
        run(() -> nativeHandle().copyTo(destination, nbytes));
    }

    private void requireFloating() {
        DType dtype = dtype();
        if (!dtype.isFloatingPoint()) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    "toFloatArray() needs a floating-point tensor, this one is " + dtype);
        }
    }

    private static long checkedLength(Tensor t) {
        long n = t.numel();
        if (n > Integer.MAX_VALUE - 8) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "tensor of " + n + " elements exceeds a Java array");
        }
        return Math.max(n, 0);
    }

    @Override
    public String toString() {
        try {
            return call(() -> nativeHandle().describe());
        } catch (PeftException e) {
            if (e.kind() != PeftException.Kind.CLOSED) {
                throw e;
            }
            return "Tensor(closed)";
        }
    }

    /** Shape as text, e.g. "[2, 3]". */
    public String shapeString() {
        return Arrays.toString(shape());
    }
}
