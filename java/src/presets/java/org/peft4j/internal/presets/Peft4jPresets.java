package org.peft4j.internal.presets;

import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.Properties;
import org.bytedeco.javacpp.tools.Info;
import org.bytedeco.javacpp.tools.InfoMap;
import org.bytedeco.javacpp.tools.InfoMapper;

/**
 * JavaCPP presets over the torch-free facade {@code native/api/}: {@code peft4j_api.h}, {@code model_api.h},
 * {@code peft_api.h} and {@code train_api.h}.
 * The generated class {@code org.peft4j.internal.Peft4jNative} is build output; the public API wraps it.
 */
@Properties(
        target = "org.peft4j.internal.Peft4jNative",
        value = @Platform(include = {"peft4j_api.h", "model_api.h", "peft_api.h", "train_api.h"}, link = "peft4j_core"))
public class Peft4jPresets implements InfoMapper {
    @Override
    public void map(InfoMap infoMap) {
        // Opaque pimpl state never crosses into Java.
        // Strings cross as java.lang.String in both directions.
        infoMap.put(new Info("std::string").annotations("@StdString").valueTypes("String").pointerTypes("BytePointer"));
        infoMap.put(new Info("peft4j::api::TensorState", "peft4j::api::TensorMapState", "peft4j::api::ParityState", "peft4j::api::Access").skip());
        infoMap.put(new Info("peft4j::api::ModelState", "peft4j::api::PeftState", "peft4j::api::TrainingDataState",
                "peft4j::api::TrainerState").skip());
    }
}
