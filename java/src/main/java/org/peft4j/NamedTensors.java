package org.peft4j;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.peft4j.internal.Peft4jNative.TensorMapHandle;

/** Named tensors and string metadata, as one safetensors file holds them. Names are sorted. */
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

    public int size() {
        return (int) (long) Native.call(() -> nativeHandle().size());
    }

    public List<String> names() {
        return Native.call(() -> {
            TensorMapHandle h = nativeHandle();
            List<String> names = new ArrayList<>();
            for (long i = 0, n = h.size(); i < n; i++) {
                names.add(h.name(i));
            }
            return Collections.unmodifiableList(names);
        });
    }

    public boolean contains(String name) {
        return Native.call(() -> nativeHandle().contains(name));
    }

    /** The tensor named {@code name}; a {@link PeftException} of kind NOT_FOUND when there is none. */
    public Tensor get(String name) {
        return Native.call(() -> new Tensor(nativeHandle().get(name)));
    }

    /** Adds or replaces a tensor; the collection shares the tensor's data. */
    public NamedTensors put(String name, Tensor tensor) {
        Native.run(() -> nativeHandle().put(name, tensor.nativeHandle()));
        return this;
    }

    public boolean remove(String name) {
        return Native.call(() -> nativeHandle().remove(name));
    }

    public Map<String, String> metadata() {
        return Native.call(() -> {
            TensorMapHandle h = nativeHandle();
            Map<String, String> out = new LinkedHashMap<>();
            for (long i = 0, n = h.metadataSize(); i < n; i++) {
                String key = h.metadataKey(i);
                out.put(key, h.metadataValue(key));
            }
            return Collections.unmodifiableMap(out);
        });
    }

    public NamedTensors putMetadata(String key, String value) {
        Native.run(() -> nativeHandle().putMetadata(key, value));
        return this;
    }
}
