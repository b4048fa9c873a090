package org.peft4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import org.peft4j.PeftException;
import picocli.CommandLine;
import picocli.CommandLine.Model.ArgSpec;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;

/**
 * {@code --config FILE}: a JSON or YAML object (by the file's extension) whose keys are a command's long option
 * names, without the dashes and with {@code -} or {@code _} alike ({@code learning_rate: 2e-4},
 * {@code target-modules: [q_proj, v_proj]}, {@code packing: true}). Its values replace the options' defaults,
 * and options given on the command line override them. A key that names no option of the command is an error.
 */
final class ConfigFile implements CommandLine.IDefaultValueProvider {
    private final Map<String, String> values;

    private ConfigFile(Map<String, String> values) {
        this.values = values;
    }

    /** The value of {@code --config} in {@code args} ("--config F" or "--config=F"), or null. */
    static Path find(String[] args) {
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--config") && i + 1 < args.length) {
                return Path.of(args[i + 1]);
            }
            if (args[i].startsWith("--config=")) {
                return Path.of(args[i].substring("--config=".length()));
            }
        }
        return null;
    }

    /** Reads {@code file} and checks its keys against the options of {@code command}. */
    static ConfigFile read(Path file, CommandSpec command) {
        if (!Files.isRegularFile(file)) {
            throw new PeftException(PeftException.Kind.NOT_FOUND, "config file '" + file + "' does not exist");
        }
        String name = file.getFileName().toString().toLowerCase(Locale.ROOT);
        ObjectMapper mapper = name.endsWith(".yaml") || name.endsWith(".yml") ? new ObjectMapper(new YAMLFactory())
                : new ObjectMapper();
        JsonNode root;
        try {
            root = mapper.readTree(file.toFile());
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.FORMAT, "config file '" + file + "': " + e.getMessage().lines()
                    .findFirst().orElse(""));
        }
        if (root == null || !root.isObject()) {
            throw new PeftException(PeftException.Kind.FORMAT, "config file '" + file + "' must hold an object");
        }
        TreeSet<String> known = new TreeSet<>();
        for (OptionSpec option : command.options()) {
            known.add(key(option.longestName()));
        }
        Map<String, String> values = new TreeMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> field = it.next();
            String key = key(field.getKey());
            if (!known.contains(key) || key.equals("config") || key.equals("help") || key.equals("version")) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "config file '" + file + "': '"
                        + field.getKey() + "' is not an option of " + command.qualifiedName());
            }
            values.put(key, text(field.getValue(), file, field.getKey()));
        }
        return new ConfigFile(values);
    }

    private static String key(String optionName) {
        return optionName.replaceFirst("^-+", "").replace('_', '-').toLowerCase(Locale.ROOT);
    }

    private static String text(JsonNode value, Path file, String key) {
        if (value.isArray()) {
            List<String> items = new ArrayList<>();
            value.forEach(item -> items.add(text(item, file, key)));
            return String.join(",", items);
        }
        if (value.isObject() || value.isNull()) {
            throw new PeftException(PeftException.Kind.FORMAT, "config file '" + file + "': '" + key
                    + "' must be a value or a list of values");
        }
        return value.asText();
    }

    @Override
    public String defaultValue(ArgSpec argSpec) {
        return argSpec instanceof OptionSpec option ? values.get(key(option.longestName())) : null;
    }
}
