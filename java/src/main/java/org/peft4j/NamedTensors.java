package org.peft4j;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.peft4j.internal.Peft4jNative;
import org.peft4j.internal.Peft4jNative.TensorMapHandle;

/**
 * Named tensors and string metadata, as one safetensors file holds them. Names are sorted. The methods are
 * synchronized, so threads may share one collection.
 */
public final class NamedTensors extends NativeResource {

    NamedTensors(TensorMapHandle handle) {
        super(handle, "tensor collection");
    }

    public NamedTensors() {
        this(new TensorMapHandle());
    }

    TensorMapHandle nativeHandle() {
        return handle();
    }

    public synchronized int size() {
        return (int) (long) call(() -> nativeHandle().size());
    }

    public synchronized List<String> names() {
        return call(() -> {
            TensorMapHandle h = nativeHandle();
            List<String> names = new ArrayList<>();
            for (long i = 0, n = h.size(); i < n; i++) {
                names.add(h.name(i));
            }
            return Collections.unmodifiableList(names);
        });
    }

    public synchronized boolean contains(String name) {
        return call(() -> nativeHandle().contains(name));
    }

    /** The tensor named {@code name}; a {@link PeftException} of kind NOT_FOUND when there is none. */
    public synchronized Tensor get(String name) {
        return call(() -> new Tensor(nativeHandle().get(name)));
    }

    /** Adds or replaces a tensor; the collection shares the tensor's data. */
    public synchronized NamedTensors put(String name, Tensor tensor) {
        run(() -> nativeHandle().put(name, tensor.nativeHandle()), tensor);
        return this;
    }

    public synchronized boolean remove(String name) {
        return call(() -> nativeHandle().remove(name));
    }

    public synchronized Map<String, String> metadata() {
        return call(() -> {
            TensorMapHandle h = nativeHandle();
            Map<String, String> out = new LinkedHashMap<>();
            for (long i = 0, n = h.metadataSize(); i < n; i++) {
                String key = h.metadataKey(i);
                out.put(key, h.metadataValue(key));
            }
            return Collections.unmodifiableMap(out);
        });
    }

    synchronized void write(Path path) {
        run(() -> Peft4jNative.writeSafetensors(path.toString(), nativeHandle()));
    }

    public synchronized NamedTensors putMetadata(String key, String value) {
        run(() -> nativeHandle().putMetadata(key, value));
        return this;
    }
}
