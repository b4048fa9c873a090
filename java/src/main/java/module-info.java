/**
 * peft4j: parameter-efficient fine-tuning for the JVM over a C++ libtorch core. The API is {@code org.peft4j}
 * (models, adapters, training), {@code org.peft4j.config} (each method's config), {@code org.peft4j.data} (JSONL
 * records and examples) and {@code org.peft4j.text} (tokenizers); the CLI, the report writer and the native binding
 * are not exported.
 */
module org.peft4j {
    requires ai.djl.tokenizers;
    requires com.fasterxml.jackson.databind;
    requires com.fasterxml.jackson.dataformat.yaml;
    requires info.picocli;
    requires java.desktop;  // the loss plot (xchart draws with AWT, headless)
    requires org.bytedeco.javacpp;
    requires org.knowm.xchart;
    requires org.slf4j;

    exports org.peft4j;
    exports org.peft4j.config;
    exports org.peft4j.data;
    exports org.peft4j.text;

    // picocli reads the CLI's annotated fields; JavaCPP loads the binding's classes and their native library.
    opens org.peft4j.cli to info.picocli;
    opens org.peft4j.internal to org.bytedeco.javacpp;
    opens org.peft4j.internal.presets to org.bytedeco.javacpp;
}
