// TextToImageDiffusion (seed 002): a transformer text encoder and a U-Net denoiser that attends
// to the text through cross-attention. It predicts the noise eps in x_t = sqrt(abar) x0 +
// sqrt(1 - abar) eps. Parameter names match the PyTorch twin (scripts/diffusion_twin.py)
// exactly, so checkpoints move both ways with strict=True.
//
// Legend: B = batch, C = channels of a level, H, W = its size, T = text tokens (max_length),
// L = T + 1 (the null token first), D = context width, E = 4 * ch (the time embedding).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/diffusion/samplers.h"
#include "models/diffusion/schedule.h"
#include "models/image_model.h"
#include "models/tokenizer.h"
#include "nn/conv.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/norm_attention.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink::diffusion {

struct DiffusionConfig {
  std::string name = "small";  // "tiny", "small", "base" or "custom"
  int64_t ch = 32;             // channels of level 0
  std::vector<int64_t> channel_mult = {1, 2, 2};
  std::vector<int64_t> attention_levels = {1, 2};
  int64_t context_dim = 64;  // D
  int64_t text_layers = 2;
  int64_t heads = 4;
  int64_t groups = 8;
  int64_t in_channels = 1;          // 1 for the nine shapes, 3 for scenes
  int64_t image_size = 28;          // 28 or 32: must halve cleanly at every level but the last
  std::string tokenizer = "char";   // "char" (the nine shapes) or "word" (scenes)
  int64_t vocab_size = 28;          // the tokenizer's
  int64_t max_length = 32;          // T
  std::string schedule = "linear";  // the noise schedule's betas: "linear" or "cosine"
  // What the U-Net predicts: "eps" (the noise) or "v" = sqrt(abar) eps - sqrt(1 - abar) x0
  // (Salimans & Ho 2022), which stays well conditioned at high noise, where eps says almost
  // nothing about x0. The samplers always see eps (converted in generate).
  std::string prediction = "eps";
  int64_t timesteps = 1000;
  // Add a fixed 2-D position code (query_position_table) to the image tokens that form the
  // cross-attention queries, so that each place in the picture can ask for the words that name
  // it (binding "red" to "on the left"). Off by default; no parameters, so the checkpoint names
  // are the same either way.
  bool query_positions = false;
  // Let each token of the text encoder attend only to the words of its own phrase (the phrases
  // are the parts of the prompt joined by "and", which starts the next one; every token may
  // also attend to the null token, which attends to itself alone), so that "red" in "a red circle
  // on the left and ..." is encoded with "on the left" and nothing of the other object. Without it
  // the encoder learned a bag of words on scenes (each output depended on its own word only) and
  // the U-Net could not tell which object a word belongs to. A prior in the spirit of
  // StructureDiffusion (Feng et al. 2023), which encodes noun phrases apart. Needs the word
  // tokenizer; no parameters, so the checkpoint names are the same either way.
  bool phrase_attention = false;

  // "tiny" (ch 16), "small" (ch 32), "base" (ch 64); throws ink::Error naming the known ones.
  static DiffusionConfig preset(const std::string& name);
  std::vector<int64_t> level_channels() const;
  bool has_attention(int64_t level) const;
  // Throws ink::Error naming the first impossible field (channels not divisible by groups or
  // heads, an image size that does not halve, ...).
  void validate() const;
  // The twin's "config.json" form (sorted keys) and back; from_json checks every field.
  std::string to_json() const;
  static DiffusionConfig from_json(const std::string& json);
};

// Pre-LayerNorm transformer layer: x += attn(norm1(x)); x += fc2(gelu(fc1(norm2(x)))).
class TextLayer : public nn::Module {
 public:
  TextLayer(int64_t dim, int64_t heads, Generator* gen);
  Tensor forward(const Tensor& x, const Tensor& key_mask);  // [B, L, D] -> [B, L, D]

  std::shared_ptr<nn::LayerNorm> norm1, norm2;
  std::shared_ptr<nn::Attention> attn;
  std::shared_ptr<nn::Linear> fc1, fc2;  // [4D, D], [D, 4D]
};

// tokens [B, T] (0 = padding) -> context [B, L, D] and its key mask [B, L] (1 = valid): the
// learned null token at position 0 (so the empty prompt still has one valid key), then the
// token embeddings, plus positions, through the layers and a final LayerNorm. With
// phrase_attention the layers' self-attention uses phrase_mask instead of the key mask.
class DiffusionTextEncoder : public nn::Module {
 public:
  DiffusionTextEncoder(const DiffusionConfig& config, Generator* gen);
  struct Output {
    Tensor context;   // [B, L, D]
    Tensor key_mask;  // [B, L] Float32, 1 = a real token or the null token
  };
  Output forward(const Tensor& tokens);
  // The self-attention mask of phrase_attention, [B, T+1, T+1] Float32 (1 = may attend): query
  // i sees key j when j is valid and is the null token (position 0) or in i's phrase. The null
  // token is a phrase of its own; phrase 0 holds the words up to the first `and_id`, and each
  // `and_id` starts the next.
  static Tensor phrase_mask(const Tensor& tokens, const Tensor& key_mask, int64_t and_id);

  std::shared_ptr<nn::Embedding> tok_emb;  // [V, D], padding row 0
  Tensor null_emb;                         // [1, 1, D]
  Tensor pos_emb;                          // [1, L, D]
  std::shared_ptr<nn::Module> layers;      // "0", "1", ...: TextLayer
  std::shared_ptr<nn::LayerNorm> norm_out;

 private:
  std::vector<std::shared_ptr<TextLayer>> layer_list_;
  int64_t and_id_ = -1;  // the word "and" with phrase_attention, else -1
};

// h = conv1(silu(norm1(x))) + time_proj(silu(temb)); h = conv2(silu(norm2(h)));
// out = skip(x) + h, skip a 1x1 conv when the channel count changes. conv2 starts at zero.
class ResBlock : public nn::Module {
 public:
  ResBlock(int64_t in_ch, int64_t out_ch, int64_t temb_dim, int64_t groups, Generator* gen);
  Tensor forward(const Tensor& x, const Tensor& temb);  // [B, Cin, H, W], [B, E]

  std::shared_ptr<nn::GroupNorm> norm1, norm2;
  std::shared_ptr<nn::Conv2d> conv1, conv2, skip;  // skip may be null
  std::shared_ptr<nn::Linear> time_proj;
};

// On the image as tokens [B, H*W, C]: (optional) t += self_attn(norm_self(t));
// t += cross_attn(norm_cross(t), context, key_mask). Both to_out layers start at zero.
// With query_side > 0 (DiffusionConfig::query_positions) the cross-attention's queries are
// made from norm_cross(t) + query_position_table(side, side, ch) instead of norm_cross(t), as in
// the PyTorch twin (scripts/diffusion_twin.py).
class AttentionBlock : public nn::Module {
 public:
  AttentionBlock(int64_t ch, int64_t context_dim, int64_t heads, bool self_attention,
                 Generator* gen, int64_t query_side = 0);
  Tensor forward(const Tensor& x, const Tensor& context, const Tensor& key_mask);

  std::shared_ptr<nn::LayerNorm> norm_self, norm_cross;  // norm_self may be null
  std::shared_ptr<nn::Attention> self_attn, cross_attn;  // self_attn may be null

 private:
  Tensor query_pos_;  // [1, side*side, ch], a constant; undefined without query positions
};

// The fixed position code of query_positions, [1, H*W, C] for C a multiple of 4: token
// (y, x) gets, for k < C/4, sin(pi (k+1) (y+0.5)/H), cos(same), sin(pi (k+1) (x+0.5)/W),
// cos(same) in the channel blocks [0, C/4), [C/4, C/2), [C/2, 3C/4), [3C/4, C) (a cosine-series
// basis over the grid, so every frequency is one the grid can show).
Tensor query_position_table(int64_t h, int64_t w, int64_t c);

// One level of the U-Net's way down (res, attn, downsample) or up (res, attn, upsample).
struct UNetLevel : public nn::Module {
  UNetLevel() : nn::Module("Module") {}
  std::shared_ptr<ResBlock> res;
  std::shared_ptr<AttentionBlock> attn;    // null where the level has no attention
  std::shared_ptr<nn::Conv2d> downsample;  // 3x3 stride 2 (down, not on the last level)
  std::shared_ptr<nn::Conv2d> upsample;    // nearest x2 then this 3x3 (up, not on level 0)
};

class UNet : public nn::Module {
 public:
  UNet(const DiffusionConfig& config, Generator* gen);
  // x_t [B, C, H, W], timesteps [B] (Float32 values of the integer steps), context [B, L, D],
  // key_mask [B, L] -> eps [B, C, H, W].
  Tensor forward(const Tensor& x, const Tensor& timesteps, const Tensor& context,
                 const Tensor& key_mask);

  std::shared_ptr<nn::Module> time_embed;  // lin1 [E, ch], lin2 [E, E]
  std::shared_ptr<nn::Linear> time_lin1, time_lin2;
  std::shared_ptr<nn::Conv2d> conv_in;
  std::shared_ptr<nn::Module> down, up;  // "0", "1", ...: UNetLevel
  std::shared_ptr<ResBlock> mid_res1, mid_res2;
  std::shared_ptr<AttentionBlock> mid_attn;
  std::shared_ptr<nn::GroupNorm> norm_out;
  std::shared_ptr<nn::Conv2d> conv_out;

  // A cross-attention layer and the size of the grid its queries come from.
  struct CrossAttentionLayer {
    const nn::Attention* layer = nullptr;
    int64_t height = 0, width = 0;
  };
  // Every cross-attention layer in forward's order (down levels, middle, up levels).
  std::vector<CrossAttentionLayer> cross_attention_layers() const;

 private:
  DiffusionConfig config_;
  std::vector<std::shared_ptr<UNetLevel>> down_levels_, up_levels_;
};

// [sin(t f_i), cos(t f_i)] for i < half = dim / 2, f_i = exp(-ln(10000) i / half): [B] -> [B, dim].
Tensor sinusoidal_embedding(const Tensor& timesteps, int64_t dim);

// The cross-attention maps of a generation (GenerateOptions::attention), for showing which
// pixels each prompt token drove. For each picture and each valid context position p (0 = the
// learned null token, then the prompt's tokens in order; padding is left out): at each pixel,
// the softmax weight of p's key, averaged over the heads, over the sampler steps and over the
// U-Net's cross-attention layers, each layer's grid first resized to the picture's H x W
// (bilinear with half-pixel centres, as F.interpolate(mode="bilinear", align_corners=False)).
// Only the conditional half of the CFG batch counts. At every pixel the P values sum to 1.
struct AttentionMaps {
  std::vector<int64_t> tokens;  // the prompt's token ids at positions 1 .. P-1
  Tensor maps;                  // [N, P, H, W] Float32, P = tokens.size() + 1
  int64_t layers = 0;           // cross-attention layers averaged
  int64_t steps = 0;            // sampler steps averaged
};

// How to sample: the sampler, its steps and guidance, and the negative prompt that replaces the
// empty prompt as the unconditional half of classifier-free guidance.
struct GenerateOptions {
  std::string sampler = "ddim";  // ddim, ddpm, euler, dpmpp2m
  int64_t steps = 50;
  double guidance = 3.0;  // w in eps = eps_u + w (eps_c - eps_u); 1 = no guidance
  // The noise levels that are guided (see samplers.h); the others use eps_c alone, at half the
  // cost. Default: Kynkaenniemi et al.'s (0.28, 5.42] (on the default schedule with 50 trailing
  // DDIM steps: 24 of the 50 steps, t = 99 ... 559); {0, inf} guides every step.
  GuidanceInterval guidance_interval{0.28, 5.42};
  double eta = 0.0;  // DDIM's noise (0 = deterministic)
  std::string negative_prompt;
  int64_t batch = 64;  // pictures per U-Net batch (the CFG batch is twice this)
  // Called after each sampler step with the step, x_t and x0_hat (both in [-1, 1] space) of the
  // current chunk of pictures; return false to stop: generate then throws ink::Error saying it
  // was cancelled. Used for progress, previews and films.
  StepCallback callback;
  // Optional: when set, generate also fills it (one extra softmax per cross-attention layer and
  // step; the pictures are bit-identical either way). Null: nothing is collected.
  AttentionMaps* attention = nullptr;
  // Throws ink::Error naming the setting when something is out of range.
  void validate() const;
};

class TextToImageDiffusion : public ImageModel {
 public:
  explicit TextToImageDiffusion(const DiffusionConfig& config = {}, Generator* gen = nullptr);
  // The U-Net's prediction (eps or v, as config().prediction says) for x_t [B, C, H, W] at
  // timesteps [B] (Float32) given prompt tokens [B, T] (Int64).
  Tensor forward(const Tensor& x_t, const Tensor& timesteps, const Tensor& tokens);

  // ---- ImageModel ----
  std::string kind() const override { return "diffusion"; }
  std::string config_json() const override { return config_.to_json(); }
  const Tokenizer& tokenizer() const override { return *tokenizer_; }
  ImageFormat image_format() const override;
  // n pictures of `prompt` with the default GenerateOptions.
  Tensor generate(const std::string& prompt, int64_t n, Generator& generator) override;
  // n pictures [n, C, H, W] in [0, 1]: x_T ~ N(0, I) from `generator`, then the sampler with
  // classifier-free guidance, chunk by chunk. Under an InferenceGuard; the module is not
  // changed, so several threads may sample from one model at once.
  Tensor generate(const std::string& prompt, int64_t n, Generator& generator,
                  const GenerateOptions& options);

  const DiffusionConfig& config() const { return config_; }
  const NoiseSchedule& schedule() const { return schedule_; }

  std::shared_ptr<DiffusionTextEncoder> text_encoder;
  std::shared_ptr<UNet> unet;

 private:
  DiffusionConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  NoiseSchedule schedule_;
};

// The tokenizer a config names ("char" or "word"), with the config's max_length.
std::unique_ptr<Tokenizer> make_tokenizer(const DiffusionConfig& config);

}  // namespace ink::diffusion
