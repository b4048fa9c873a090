package org.peft4j.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.peft4j.PeftException;
import picocli.CommandLine.Option;
import org.peft4j.config.AdapterConfig;
import org.peft4j.config.LoraConfig;

/**
 * Which adapter train makes: {@code --adapter-config} (any method's adapter_config.json, as PEFT writes it), or
 * {@code --method} with PEFT's defaults for that method, the LoRA flags applying to LoRA.
 */
final class AdapterOptions {
    @Option(names = "--method", paramLabel = "NAME",
            description = "PEFT method (peft_type, any case: lora, ia3, loha, ...) with its PEFT defaults (default: ${DEFAULT-VALUE})")
    String method = "lora";

    @Option(names = "--adapter-config", paramLabel = "FILE",
            description = "adapter_config.json of any method; replaces --method and the LoRA flags")
    Path adapterConfig;

    @Option(names = "--target-modules", split = ",", paramLabel = "NAME",
            description = "modules to adapt, or all-linear (default for LoRA: all-linear; other methods: their config's)")
    List<String> targetModules = new ArrayList<>();

    @Option(names = "--lora-r", paramLabel = "R", description = "LoRA rank (default: ${DEFAULT-VALUE})")
    int loraR = 8;

    @Option(names = "--lora-alpha", paramLabel = "A", description = "LoRA alpha; scaling = alpha / r (default: ${DEFAULT-VALUE})")
    double loraAlpha = 16;

    @Option(names = "--lora-dropout", paramLabel = "P", description = "LoRA dropout (default: ${DEFAULT-VALUE})")
    double loraDropout = 0.0;

    @Option(names = "--init-lora-weights", paramLabel = "INIT",
            description = "LoRA's init_lora_weights: true, false, gaussian, pissa, pissa_niter_K, olora, orthogonal, "
                    + "mica, corda, eva or lora_ga (PEFT's default sub-configs; corda, eva and lora_ga learn from "
                    + "--init-data) (default: ${DEFAULT-VALUE})")
    String initLoraWeights = "true";

    /** The adapter's config; {@code taskType} (PEFT's "CAUSAL_LM" or "SEQ_CLS") is recorded in a LoRA config. */
    AdapterConfig toConfig(String taskType) {
        if (adapterConfig != null) {
            if (!Files.isRegularFile(adapterConfig)) {
                throw new PeftException(PeftException.Kind.NOT_FOUND, "adapter config '" + adapterConfig
                        + "' does not exist");
            }
            try {
                return AdapterConfig.fromJson(Files.readString(adapterConfig));
            } catch (IOException e) {
                throw new PeftException(PeftException.Kind.IO, "cannot read adapter config '" + adapterConfig + "': " + e);
            }
        }
        if (method.equalsIgnoreCase("lora")) {
            LoraConfig.Builder lora = LoraConfig.builder().r(loraR).loraAlpha(loraAlpha).loraDropout(loraDropout)
                    .taskType(taskType);
            if (targetModules.isEmpty() || targetModules.equals(List.of("all-linear"))) {
                lora.allLinear();
            } else {
                lora.targetModules(targetModules.toArray(String[]::new));
            }
            switch (initLoraWeights) {
                case "true", "false" -> lora.initLoraWeights(Boolean.parseBoolean(initLoraWeights));
                case "corda" -> lora.cordaInit();
                case "eva" -> lora.evaInit();
                case "lora_ga" -> lora.loraGaInit();
                default -> lora.initLoraWeights(initLoraWeights);
            }
            return lora.build();
        }
        ObjectNode json = new ObjectMapper().createObjectNode();
        json.put("peft_type", method.toUpperCase(Locale.ROOT));
        if (targetModules.equals(List.of("all-linear"))) {
            json.put("target_modules", "all-linear");
        } else if (!targetModules.isEmpty()) {
            targetModules.forEach(json.putArray("target_modules")::add);
        }
        return AdapterConfig.fromJson(json.toString());
    }
}
