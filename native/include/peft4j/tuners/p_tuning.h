// P-tuning (Liu et al., 2021) as PEFT 0.21's PromptEncoder: virtual-token embeddings ("embedding") reparameterised by
// an encoder before they are prepended to the input embeddings. encoder_reparameterization_type MLP: "mlp_head",
// Linear(token_dim, h) ReLU Linear(h, h) ReLU Linear(h, token_dim); LSTM: "lstm_head", a bidirectional LSTM of
// encoder_num_layers layers (hidden h, encoder_dropout between layers) followed by "mlp_head", Linear(2h, 2h) ReLU
// Linear(2h, token_dim); h = encoder_hidden_size. In inference mode (loaded adapters) the encoder is the table of
// its outputs alone, as PEFT saves it.
#pragma once

#include "peft4j/tuners/prompt_learning.h"
