package org.peft4j.data;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import org.peft4j.PeftException;

/**
 * The classes of a classification data set and their ids: given explicitly (id = position in the list), or taken
 * from the training records: integer labels are their own ids, other labels are numbered in sorted order.
 */
public final class LabelSet {
    private final Map<String, Long> ids;

    private LabelSet(Map<String, Long> ids) {
        this.ids = ids;
    }

    public static LabelSet of(List<String> names) {
        Map<String, Long> ids = new TreeMap<>();
        for (String name : names) {
            if (ids.putIfAbsent(name, (long) ids.size()) != null) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "label '" + name + "' is listed twice");
            }
        }
        return new LabelSet(ids);
    }

    public static LabelSet from(List<DataRecord> records) {
        TreeSet<String> names = new TreeSet<>();
        for (DataRecord record : records) {
            if (record instanceof DataRecord.Labeled labeled) {
                names.add(labeled.label());
            }
        }
        if (!names.isEmpty() && names.stream().allMatch(n -> n.matches("\\d+"))) {
            Map<String, Long> ids = new TreeMap<>();
            names.forEach(n -> ids.put(n, Long.parseLong(n)));
            return new LabelSet(ids);
        }
        return of(new ArrayList<>(names));
    }

    public long id(String label, String source) {
        Long id = ids.get(label);
        if (id == null) {
            throw new PeftException(PeftException.Kind.FORMAT, source + ": label \"" + label
                    + "\" is not one of the training labels " + ids.keySet());
        }
        return id;
    }

    /** The number of classes the model needs: one more than the largest id. */
    public long classCount() {
        return ids.values().stream().mapToLong(Long::longValue).max().orElse(-1) + 1;
    }

    public Map<String, Long> asMap() {
        return Map.copyOf(ids);
    }
}
