package org.peft4j.data;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.peft4j.PeftException;

/**
 * Reads a JSONL data file into {@link DataRecord}s: one JSON object per line, blank lines skipped, every line in
 * the format of the first. A problem names the file and line: {@code data.jsonl:7: "completion" must be a string}.
 */
public final class JsonlReader {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Set<String> ROLES = Set.of("system", "user", "assistant");

    private JsonlReader() {}

    public static List<DataRecord> read(Path file) {
        if (!Files.exists(file)) {
            throw new PeftException(PeftException.Kind.NOT_FOUND, "data file '" + file + "' does not exist");
        }
        if (!Files.isRegularFile(file)) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "data file '" + file + "' is not a file");
        }
        List<DataRecord> records = new ArrayList<>();
        try (BufferedReader reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            String line;
            int number = 0;
            while ((line = reader.readLine()) != null) {
                number++;
                if (line.isBlank()) {
                    continue;
                }
                DataRecord record = parse(line, file + ":" + number);
                if (!records.isEmpty() && record.getClass() != records.get(0).getClass()) {
                    throw error(record.source(), "a " + formatName(record) + " line in a file of "
                            + formatName(records.get(0)) + " lines (" + records.get(0).source() + ")");
                }
                records.add(record);
            }
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.IO, "cannot read data file '" + file + "': " + e.getMessage());
        }
        if (records.isEmpty()) {
            throw new PeftException(PeftException.Kind.FORMAT, "data file '" + file + "' has no examples");
        }
        return records;
    }

    /** The records of several files in order; every file must hold the format of the first. */
    public static List<DataRecord> readAll(List<Path> files) {
        List<DataRecord> records = new ArrayList<>();
        for (Path file : files) {
            List<DataRecord> more = read(file);
            if (!records.isEmpty() && more.get(0).getClass() != records.get(0).getClass()) {
                throw error(more.get(0).source(), "a file of " + formatName(more.get(0)) + " lines after one of "
                        + formatName(records.get(0)) + " lines (" + records.get(0).source() + ")");
            }
            records.addAll(more);
        }
        return records;
    }

    /** Parses one line; {@code source} ("file:line") prefixes any error. */
    static DataRecord parse(String line, String source) {
        JsonNode node;
        try {
            node = JSON.readTree(line);
        } catch (JsonProcessingException e) {
            throw error(source, "invalid JSON: " + e.getOriginalMessage());
        }
        if (node == null || !node.isObject()) {
            throw error(source, "expected a JSON object");
        }
        if (node.has("messages")) {
            return new DataRecord.Chat(source, messages(node.get("messages"), source));
        }
        if (node.has("prompt") || node.has("completion")) {
            return new DataRecord.PromptCompletion(source, string(node, "prompt", source),
                    string(node, "completion", source));
        }
        if (node.has("text") && node.has("label")) {
            JsonNode label = node.get("label");
            if (!label.isTextual() && !label.isIntegralNumber()) {
                throw error(source, "\"label\" must be a string or an integer");
            }
            return new DataRecord.Labeled(source, string(node, "text", source), label.asText());
        }
        if (node.has("text")) {
            return new DataRecord.Text(source, string(node, "text", source));
        }
        throw error(source, "expected \"text\", \"prompt\" + \"completion\", \"messages\" or \"text\" + \"label\"");
    }

    private static List<ChatMessage> messages(JsonNode array, String source) {
        if (!array.isArray() || array.isEmpty()) {
            throw error(source, "\"messages\" must be a non-empty array");
        }
        List<ChatMessage> messages = new ArrayList<>();
        boolean assistant = false;
        for (JsonNode message : array) {
            if (!message.isObject()) {
                throw error(source, "each message must be an object with \"role\" and \"content\"");
            }
            String role = string(message, "role", source);
            if (!ROLES.contains(role)) {
                throw error(source, "unknown role \"" + role + "\" (system, user or assistant)");
            }
            assistant |= role.equals("assistant");
            messages.add(new ChatMessage(role, string(message, "content", source)));
        }
        if (!assistant) {
            throw error(source, "the chat has no assistant message to learn");
        }
        return messages;
    }

    private static String string(JsonNode node, String field, String source) {
        JsonNode value = node.get(field);
        if (value == null) {
            throw error(source, "missing \"" + field + "\"");
        }
        if (!value.isTextual()) {
            throw error(source, "\"" + field + "\" must be a string");
        }
        return value.asText();
    }

    private static String formatName(DataRecord record) {
        if (record instanceof DataRecord.PromptCompletion) {
            return "prompt/completion";
        }
        if (record instanceof DataRecord.Chat) {
            return "messages";
        }
        return record instanceof DataRecord.Labeled ? "text/label" : "text";
    }

    private static PeftException error(String source, String problem) {
        return new PeftException(PeftException.Kind.FORMAT, source + ": " + problem);
    }
}
