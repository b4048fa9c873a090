package org.peft4j.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.PeftException;

class JsonlReaderTest {
    @TempDir
    Path dir;

    private Path write(String name, String... lines) throws Exception {
        Path file = dir.resolve(name);
        Files.writeString(file, String.join("\n", lines) + "\n");
        return file;
    }

    @Test
    void readsEachFormat() throws Exception {
        List<DataRecord> text = JsonlReader.read(write("t.jsonl", "{\"text\": \"hello\"}", "", "{\"text\": \"world\"}"));
        assertEquals(List.of("hello", "world"), text.stream().map(r -> ((DataRecord.Text) r).text()).toList());
        assertEquals(dir.resolve("t.jsonl") + ":3", text.get(1).source());

        DataRecord pc = JsonlReader.read(write("pc.jsonl", "{\"prompt\": \"Q\", \"completion\": \" A\"}")).get(0);
        assertEquals(new DataRecord.PromptCompletion(pc.source(), "Q", " A"), pc);

        DataRecord chat = JsonlReader.read(write("c.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},"
                + " {\"role\": \"assistant\", \"content\": \"yo\"}]}")).get(0);
        assertEquals(List.of(new ChatMessage("user", "hi"), new ChatMessage("assistant", "yo")),
                ((DataRecord.Chat) chat).messages());

        List<DataRecord> labeled = JsonlReader.read(write("l.jsonl", "{\"text\": \"good\", \"label\": \"pos\"}",
                "{\"text\": \"bad\", \"label\": 0}"));
        assertInstanceOf(DataRecord.Labeled.class, labeled.get(1));
        assertEquals("0", ((DataRecord.Labeled) labeled.get(1)).label());
    }

    private String problem(String... lines) throws Exception {
        Path file = write("bad.jsonl", lines);
        PeftException e = assertThrows(PeftException.class, () -> JsonlReader.read(file));
        assertEquals(PeftException.Kind.FORMAT, e.kind());
        return e.getMessage();
    }

    @Test
    void malformedLinesNameFileAndLine() throws Exception {
        String file = dir.resolve("bad.jsonl").toString();
        assertEquals(file + ":2: invalid JSON: Unexpected character ('}' (code 125)): was expecting double-quote to "
                + "start field name", problem("{\"text\": \"a\"}", "{\"text\": \"b\",}"));
        assertEquals(file + ":1: \"completion\" must be a string", problem("{\"prompt\": \"a\", \"completion\": 3}"));
        assertEquals(file + ":1: missing \"completion\"", problem("{\"prompt\": \"a\"}"));
        assertEquals(file + ":1: expected \"text\", \"prompt\" + \"completion\", \"messages\" or \"text\" + \"label\"",
                problem("{\"input\": \"a\"}"));
        assertEquals(file + ":1: expected a JSON object", problem("[1, 2]"));
        assertEquals(file + ":3: a prompt/completion line in a file of text lines (" + file + ":1)",
                problem("{\"text\": \"a\"}", "{\"text\": \"b\"}", "{\"prompt\": \"a\", \"completion\": \"b\"}"));
        assertEquals(file + ":1: unknown role \"bot\" (system, user or assistant)",
                problem("{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}"));
        assertEquals(file + ":1: the chat has no assistant message to learn",
                problem("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}"));
        assertEquals("data file '" + file + "' has no examples", problem("", "  "));
    }

    @Test
    void severalFilesMustShareAFormat() throws Exception {
        Path a = write("a.jsonl", "{\"text\": \"one\"}");
        Path b = write("b.jsonl", "{\"text\": \"two\"}", "{\"text\": \"three\"}");
        assertEquals(3, JsonlReader.readAll(List.of(a, b)).size());
        Path c = write("c.jsonl", "{\"prompt\": \"q\", \"completion\": \"a\"}");
        PeftException e = assertThrows(PeftException.class, () -> JsonlReader.readAll(List.of(a, c)));
        assertEquals(c + ":1: a file of prompt/completion lines after one of text lines (" + a + ":1)", e.getMessage());
    }

    @Test
    void bytesThatAreNotUtf8TextNameTheLineAndTheByte() throws Exception {
        byte[] head = "{\"text\": \"ok\"}\r\n{\"text\": \"caf".getBytes(StandardCharsets.UTF_8);
        Path latin1 = dir.resolve("latin1.jsonl");
        Files.write(latin1, concat(head, new byte[] {(byte) 0xE9, '"', '}', '\n'}));
        PeftException e = assertThrows(PeftException.class, () -> JsonlReader.read(latin1));
        assertEquals(PeftException.Kind.FORMAT, e.kind());
        assertEquals(latin1 + ":2: not UTF-8 text: byte 0xE9 at byte 14 of the line is invalid there (JSONL files "
                + "are UTF-8)", e.getMessage());

        Path cut = dir.resolve("cut.jsonl");  // a multi-byte character cut off at the end of the file
        Files.write(cut, concat("{\"text\": \"".getBytes(StandardCharsets.UTF_8), new byte[] {(byte) 0xE2, (byte) 0x82}));
        assertEquals(cut + ":1: not UTF-8 text: byte 0xE2 at byte 11 of the line is invalid there (JSONL files are UTF-8)",
                assertThrows(PeftException.class, () -> JsonlReader.read(cut)).getMessage());

        Path png = dir.resolve("png.jsonl");  // a PNG file's first bytes
        Files.write(png, new byte[] {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13});
        assertEquals(png + ":1: not UTF-8 text: byte 0x89 at byte 1 of the line is invalid there (JSONL files are UTF-8)",
                assertThrows(PeftException.class, () -> JsonlReader.read(png)).getMessage());

        Path nul = dir.resolve("nul.jsonl");
        Files.write(nul, "{\"text\": \"a\"}\n{\"text\": \"a\u0000b\"}\n".getBytes(StandardCharsets.UTF_8));
        assertEquals(nul + ":2: binary data, not JSON text: a NUL byte at byte 12 of the line",
                assertThrows(PeftException.class, () -> JsonlReader.read(nul)).getMessage());
    }

    @Test
    void aByteOrderMarkAndWindowsLineEndsAreAccepted() throws Exception {
        Path file = dir.resolve("bom.jsonl");
        Files.write(file, concat(new byte[] {(byte) 0xEF, (byte) 0xBB, (byte) 0xBF},
                "{\"text\": \"caf\u00e9\"}\r\n{\"text\": \"b\"}\r\n".getBytes(StandardCharsets.UTF_8)));
        List<DataRecord> records = JsonlReader.read(file);
        assertEquals(List.of("caf\u00e9", "b"), records.stream().map(r -> ((DataRecord.Text) r).text()).toList());
        assertEquals(file + ":2", records.get(1).source());
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] all = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, all, a.length, b.length);
        return all;
    }

    @Test
    void missingFileIsNotFound() {
        PeftException e = assertThrows(PeftException.class, () -> JsonlReader.read(dir.resolve("absent.jsonl")));
        assertEquals(PeftException.Kind.NOT_FOUND, e.kind());
        assertEquals("data file '" + dir.resolve("absent.jsonl") + "' does not exist", e.getMessage());
    }

    @Test
    void labelSetsNumberClasses() throws Exception {
        List<DataRecord> named = JsonlReader.read(write("n.jsonl", "{\"text\": \"a\", \"label\": \"pos\"}",
                "{\"text\": \"b\", \"label\": \"neg\"}", "{\"text\": \"c\", \"label\": \"pos\"}"));
        LabelSet set = LabelSet.from(named);
        assertEquals(0, set.id("neg", "x"));
        assertEquals(1, set.id("pos", "x"));
        assertEquals(2, set.classCount());
        List<DataRecord> numbered = JsonlReader.read(write("i.jsonl", "{\"text\": \"a\", \"label\": 2}",
                "{\"text\": \"b\", \"label\": 0}"));
        assertEquals(2, LabelSet.from(numbered).id("2", "x"));
        assertEquals(3, LabelSet.from(numbered).classCount());
        PeftException e = assertThrows(PeftException.class, () -> set.id("maybe", "f.jsonl:4"));
        assertEquals("f.jsonl:4: label \"maybe\" is not one of the training labels [neg, pos]", e.getMessage());
    }
}
