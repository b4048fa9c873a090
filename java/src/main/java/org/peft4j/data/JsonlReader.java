package org.peft4j.data;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import org.peft4j.PeftException;

/**
 * Reads a JSONL data file into {@link DataRecord}s: one JSON object per line in UTF-8, blank lines skipped, every
 * line in the format of the first. A problem names the file and line: {@code data.jsonl:7: "completion" must be a
 * string}, {@code data.jsonl:3: not UTF-8 text: byte 0xFF at byte 12 of the line is invalid there ...}.
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
        try (InputStream in = Files.newInputStream(file)) {
            LineSplitter lines = new LineSplitter(in);
            for (byte[] bytes; (bytes = lines.next()) != null; ) {
                String source = file + ":" + lines.number();
                String line = decode(bytes, lines.length(), lines.number() == 1, source);
                if (line.isBlank()) {
                    continue;
                }
                DataRecord record = parse(line, source);
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

    /**
     * One line's text. JSONL is UTF-8: a NUL byte (binary data) or a byte sequence that is not UTF-8 is an error
     * naming the line, the byte's position and value. A UTF-8 byte order mark opening the file is skipped.
     */
    private static String decode(byte[] bytes, int length, boolean firstLine, String source) {
        int start = firstLine && length >= 3 && (bytes[0] & 0xff) == 0xEF && (bytes[1] & 0xff) == 0xBB
                && (bytes[2] & 0xff) == 0xBF ? 3 : 0;
        for (int i = start; i < length; i++) {
            if (bytes[i] == 0) {
                throw error(source, "binary data, not JSON text: a NUL byte at byte " + (i + 1) + " of the line");
            }
        }
        CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(bytes, start, length - start);
        CharBuffer out = CharBuffer.allocate(length);  // UTF-8 never decodes to more chars than bytes
        CoderResult result = decoder.decode(in, out, true);
        if (!result.isError()) {
            result = decoder.flush(out);
        }
        if (result.isError()) {
            throw error(source, String.format("not UTF-8 text: byte 0x%02X at byte %d of the line is invalid there "
                    + "(JSONL files are UTF-8)", bytes[in.position()] & 0xff, in.position() + 1));
        }
        return out.flip().toString();
    }

    /** Splits a byte stream at '\n' (a '\r' before it dropped), counting lines from 1. */
    private static final class LineSplitter {
        private final InputStream in;
        private final byte[] chunk = new byte[1 << 16];
        private int chunkLength;
        private int chunkPosition;
        private byte[] line = new byte[256];
        private int length;
        private int number;

        LineSplitter(InputStream in) {
            this.in = in;
        }

        /** The next line's bytes (valid up to {@link #length()}), or null at the end. */
        byte[] next() throws IOException {
            length = 0;
            boolean any = false;
            while (true) {
                if (chunkPosition == chunkLength) {
                    chunkLength = in.read(chunk);
                    chunkPosition = 0;
                    if (chunkLength <= 0) {
                        chunkLength = 0;
                        if (!any) {
                            return null;
                        }
                        break;
                    }
                }
                any = true;
                byte b = chunk[chunkPosition++];
                if (b == '\n') {
                    break;
                }
                if (length == line.length) {
                    line = Arrays.copyOf(line, line.length * 2);
                }
                line[length++] = b;
            }
            if (length > 0 && line[length - 1] == '\r') {
                length--;
            }
            number++;
            return line;
        }

        int length() {
            return length;
        }

        int number() {
            return number;
        }
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
