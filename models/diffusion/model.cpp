// TextToImageDiffusion: the text encoder, the U-Net blocks and their wiring, in the twin's order.
#include "models/diffusion/model.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>
#include <utility>

#include "models/word_tokenizer.h"
#include "nn/module.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::diffusion {

namespace {

// A plain container whose children are named "0", "1", ... (PyTorch's ModuleList layout).
template <typename T>
std::shared_ptr<nn::Module> module_list(const std::vector<std::shared_ptr<T>>& items) {
  auto list = std::make_shared<nn::Module>("ModuleList");
  for (size_t i = 0; i < items.size(); ++i) list->register_module(std::to_string(i), items[i]);
  return list;
}

void fill_zero(Tensor t) {
  if (t.defined()) std::fill(t.data(), t.data() + t.numel(), 0.0f);
}

// Layers whose output starts at zero (so each residual branch starts as the identity).
template <typename Layer>
void zero_(const std::shared_ptr<Layer>& layer) {
  fill_zero(layer->weight);
  fill_zero(layer->bias);
}

// N(0, std^2) of `shape` from gen (default generator when null).
Tensor normal(const Shape& shape, float std, Generator* gen) {
  return randn(shape, gen) * std;
}

// [B, C, H, W] <-> [B, H*W, C]
Tensor to_tokens(const Tensor& x) {
  return transpose(reshape(x, {x.size(0), x.size(1), x.size(2) * x.size(3)}), 1, 2);
}
Tensor from_tokens(const Tensor& t, int64_t h, int64_t w) {
  return reshape(transpose(t, 1, 2), {t.size(0), t.size(2), h, w});
}

}  // namespace

// ---- config ----

DiffusionConfig DiffusionConfig::preset(const std::string& name) {
  DiffusionConfig c;
  c.name = name;
  if (name == "tiny") {
    c.ch = 16;
  } else if (name == "small") {
    c.ch = 32;
  } else if (name == "base") {
    c.ch = 64;
  } else {
    INK_FAIL("diffusion: unknown config \"{}\" (known: tiny, small, base)", name.substr(0, 64));
  }
  return c;
}

std::vector<int64_t> DiffusionConfig::level_channels() const {
  std::vector<int64_t> out;
  for (int64_t m : channel_mult) out.push_back(ch * m);
  return out;
}

bool DiffusionConfig::has_attention(int64_t level) const {
  for (int64_t l : attention_levels) {
    if (l == level) return true;
  }
  return false;
}

void DiffusionConfig::validate() const {
  INK_CHECK(ch >= 1 && ch <= 1024, "diffusion config: ch must be in [1, 1024], got {}", ch);
  INK_CHECK(ch % 2 == 0,
            "diffusion config: ch must be even (the time embedding has ch/2 "
            "frequencies), got {}",
            ch);
  INK_CHECK(!channel_mult.empty() && channel_mult.size() <= 6,
            "diffusion config: channel_mult needs 1 to 6 levels, got {}", channel_mult.size());
  for (int64_t m : channel_mult) {
    INK_CHECK(m >= 1 && m <= 16, "diffusion config: channel multipliers must be in [1, 16], got {}",
              m);
  }
  for (int64_t l : attention_levels) {
    INK_CHECK(l >= 0 && l < static_cast<int64_t>(channel_mult.size()),
              "diffusion config: attention level {} does not exist ({} levels)", l,
              channel_mult.size());
  }
  INK_CHECK(groups >= 1, "diffusion config: groups must be >= 1, got {}", groups);
  INK_CHECK(heads >= 1, "diffusion config: heads must be >= 1, got {}", heads);
  for (int64_t c : level_channels()) {
    INK_CHECK(c % groups == 0, "diffusion config: {} channels do not split into {} groups", c,
              groups);
    INK_CHECK(c % heads == 0, "diffusion config: {} channels do not split into {} heads", c, heads);
  }
  INK_CHECK(context_dim >= 1 && context_dim % heads == 0,
            "diffusion config: context_dim {} must be a positive multiple of heads {}", context_dim,
            heads);
  INK_CHECK(text_layers >= 0 && text_layers <= 64,
            "diffusion config: text_layers must be in [0, 64], got {}", text_layers);
  INK_CHECK(in_channels == 1 || in_channels == 3,
            "diffusion config: in_channels must be 1 or 3, got {}", in_channels);
  INK_CHECK(vocab_size >= 2 && vocab_size <= 1'000'000,
            "diffusion config: vocab_size must be in [2, 1000000], got {}", vocab_size);
  INK_CHECK(max_length >= 1 && max_length <= 4096,
            "diffusion config: max_length must be in [1, 4096], got {}", max_length);
  INK_CHECK(tokenizer == "char" || tokenizer == "word",
            "diffusion config: tokenizer must be \"char\" or \"word\", got \"{}\"", tokenizer);
  INK_CHECK(schedule == "linear" || schedule == "cosine",
            "diffusion config: schedule must be \"linear\" or \"cosine\", got \"{}\"", schedule);
  INK_CHECK(prediction == "eps" || prediction == "v",
            "diffusion config: prediction must be \"eps\" or \"v\", got \"{}\"", prediction);
  if (query_positions) {
    // Every attention block gets the code: the attention levels', and the middle one (last level).
    const std::vector<int64_t> chs = level_channels();
    const auto last = static_cast<int64_t>(chs.size()) - 1;
    for (int64_t i = 0; i <= last; ++i) {
      INK_CHECK(!(has_attention(i) || i == last) || chs[i] % 4 == 0,
                "diffusion config: query_positions needs the channels of every level with "
                "attention divisible by 4 (the code's four sin/cos blocks), level {} has {}",
                i, chs[i]);
    }
  }
  INK_CHECK(!phrase_attention || tokenizer == "word",
            "diffusion config: phrase_attention needs the word tokenizer (its phrases are joined "
            "by the word \"and\"), got the \"{}\" tokenizer",
            tokenizer);
  INK_CHECK(timesteps >= 2 && timesteps <= 100000,
            "diffusion config: timesteps must be in [2, 100000], got {}", timesteps);
  int64_t side = image_size;
  INK_CHECK(side >= 1 && side <= 1024, "diffusion config: image_size must be in [1, 1024], got {}",
            side);
  for (size_t i = 0; i + 1 < channel_mult.size(); ++i) {
    INK_CHECK(side % 2 == 0,
              "diffusion config: image_size {} does not halve cleanly {} times (level {} is {})",
              image_size, channel_mult.size() - 1, i, side);
    side /= 2;
  }
}

std::string DiffusionConfig::to_json() const {
  nlohmann::ordered_json j;  // sorted keys, as the twin writes them
  j["attention_levels"] = attention_levels;
  j["ch"] = ch;
  j["channel_mult"] = channel_mult;
  j["context_dim"] = context_dim;
  j["groups"] = groups;
  j["heads"] = heads;
  j["image_size"] = image_size;
  j["in_channels"] = in_channels;
  j["max_length"] = max_length;
  j["name"] = name;
  // Written only for v: the eps checkpoints (and the PyTorch twin, which predicts eps) keep
  // the config they always had.
  if (prediction != "eps") j["prediction"] = prediction;
  // Written only when on (as the twin does), so the configs from before it stay as they were.
  if (query_positions) j["query_positions"] = true;
  if (phrase_attention) j["phrase_attention"] = true;
  j["schedule"] = schedule;
  j["text_layers"] = text_layers;
  j["timesteps"] = timesteps;
  j["tokenizer"] = tokenizer;
  j["vocab_size"] = vocab_size;
  return j.dump();
}

DiffusionConfig DiffusionConfig::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    INK_FAIL("diffusion config: not valid JSON ({})", e.what());
  }
  INK_CHECK(j.is_object(), "diffusion config: expected a JSON object");
  DiffusionConfig c;
  const auto get_int = [&](const char* key, int64_t& out) {
    if (!j.contains(key)) return;
    INK_CHECK(j[key].is_number_integer(), "diffusion config: \"{}\" must be an integer", key);
    out = j[key].get<int64_t>();
  };
  const auto get_list = [&](const char* key, std::vector<int64_t>& out) {
    if (!j.contains(key)) return;
    INK_CHECK(j[key].is_array() && j[key].size() <= 16,
              "diffusion config: \"{}\" must be a list of at most 16 integers", key);
    out.clear();
    for (const auto& v : j[key]) {
      INK_CHECK(v.is_number_integer(), "diffusion config: \"{}\" must hold integers", key);
      out.push_back(v.get<int64_t>());
    }
  };
  if (j.contains("name")) {
    INK_CHECK(j["name"].is_string(), "diffusion config: \"name\" must be a string");
    c.name = j["name"].get<std::string>().substr(0, 64);
  } else {
    c.name = "custom";
  }
  get_int("ch", c.ch);
  get_list("channel_mult", c.channel_mult);
  get_list("attention_levels", c.attention_levels);
  get_int("context_dim", c.context_dim);
  get_int("text_layers", c.text_layers);
  get_int("heads", c.heads);
  get_int("groups", c.groups);
  get_int("in_channels", c.in_channels);
  get_int("image_size", c.image_size);
  get_int("vocab_size", c.vocab_size);
  get_int("max_length", c.max_length);
  get_int("timesteps", c.timesteps);
  const auto get_string = [&](const char* key, std::string& out) {
    if (!j.contains(key)) return;
    INK_CHECK(j[key].is_string(), "diffusion config: \"{}\" must be a string", key);
    out = j[key].get<std::string>().substr(0, 64);
  };
  get_string("tokenizer", c.tokenizer);
  get_string("schedule", c.schedule);
  get_string("prediction", c.prediction);
  const auto get_flag = [&j](const char* key, bool& out) {
    if (!j.contains(key)) return;
    INK_CHECK(j[key].is_boolean(), "diffusion config: \"{}\" must be true or false, got {}", key,
              j[key].dump().substr(0, 60));
    out = j[key].get<bool>();
  };
  get_flag("query_positions", c.query_positions);
  get_flag("phrase_attention", c.phrase_attention);
  c.validate();
  return c;
}

// ---- text encoder ----

TextLayer::TextLayer(int64_t dim, int64_t heads, Generator* gen) : nn::Module("TextLayer") {
  norm1 = register_module("norm1", std::make_shared<nn::LayerNorm>(dim));
  attn = register_module("attn", std::make_shared<nn::Attention>(dim, dim, heads, gen));
  norm2 = register_module("norm2", std::make_shared<nn::LayerNorm>(dim));
  fc1 = register_module("fc1", std::make_shared<nn::Linear>(dim, 4 * dim, true, gen));
  fc2 = register_module("fc2", std::make_shared<nn::Linear>(4 * dim, dim, true, gen));
}

Tensor TextLayer::forward(const Tensor& x, const Tensor& key_mask) {
  const Tensor h = norm1->forward(x);
  const Tensor y = x + attn->forward(h, h, key_mask);
  return y + fc2->forward(gelu(fc1->forward(norm2->forward(y))));
}

DiffusionTextEncoder::DiffusionTextEncoder(const DiffusionConfig& config, Generator* gen)
    : nn::Module("TextEncoder") {
  const int64_t d = config.context_dim;
  tok_emb =
      register_module("tok_emb", std::make_shared<nn::Embedding>(config.vocab_size, d, 0, gen));
  null_emb = register_parameter("null_emb", normal({1, 1, d}, 0.02f, gen));
  pos_emb = register_parameter("pos_emb", normal({1, config.max_length + 1, d}, 0.02f, gen));
  for (int64_t i = 0; i < config.text_layers; ++i) {
    layer_list_.push_back(std::make_shared<TextLayer>(d, config.heads, gen));
  }
  layers = register_module("layers", module_list(layer_list_));
  norm_out = register_module("norm_out", std::make_shared<nn::LayerNorm>(d));
  if (config.phrase_attention) and_id_ = WordTokenizer::token_of("and");
}

Tensor DiffusionTextEncoder::phrase_mask(const Tensor& tokens, const Tensor& key_mask,
                                         int64_t and_id) {
  INK_CHECK(tokens.defined() && tokens.dtype() == DType::Int64 && tokens.dim() == 2 &&
                key_mask.defined() && key_mask.dtype() == DType::Float32 && key_mask.dim() == 2 &&
                key_mask.size(0) == tokens.size(0) && key_mask.size(1) == tokens.size(1) + 1,
            "phrase_mask: expected Int64 tokens [B, T] and a Float32 key mask [B, T+1], got {} "
            "and {}",
            tokens.defined() ? shape_str(tokens.shape()) : std::string("an undefined tensor"),
            key_mask.defined() ? shape_str(key_mask.shape()) : std::string("an undefined tensor"));
  const int64_t b = tokens.size(0), t = tokens.size(1), l = t + 1;
  Tensor mask = empty({b, l, l});
  const int64_t* ids = std::as_const(tokens).data_i64();
  const float* valid = std::as_const(key_mask).data();
  float* m = mask.data();
  std::vector<int64_t> phrase(static_cast<size_t>(l));
  for (int64_t n = 0; n < b; ++n) {
    phrase[0] = -1;  // the null token: a phrase of its own
    for (int64_t j = 0, current = 0; j < t; ++j) {
      if (ids[n * t + j] == and_id) ++current;
      phrase[j + 1] = current;
    }
    const float* ok = valid + n * l;
    for (int64_t i = 0; i < l; ++i) {
      for (int64_t j = 0; j < l; ++j) {
        m[(n * l + i) * l + j] = ok[j] != 0.0f && (j == 0 || phrase[i] == phrase[j]) ? 1.0f : 0.0f;
      }
    }
  }
  return mask;
}

DiffusionTextEncoder::Output DiffusionTextEncoder::forward(const Tensor& tokens) {
  INK_CHECK(tokens.defined() && tokens.dtype() == DType::Int64 && tokens.dim() == 2,
            "text_encoder: expected Int64 tokens [B, T], got {}",
            tokens.defined() ? shape_str(tokens.shape()) : std::string("an undefined tensor"));
  const int64_t b = tokens.size(0), t = tokens.size(1);
  INK_CHECK(t + 1 == pos_emb.size(1),
            "text_encoder: tokens {} have {} positions, the model was built for {}",
            shape_str(tokens.shape()), t, pos_emb.size(1) - 1);
  const int64_t d = null_emb.size(2);
  Tensor x = cat({expand(null_emb, {b, 1, d}), tok_emb->forward(tokens)}, 1) + pos_emb;
  // The mask: 1 for the null token and every non-padding token.
  Tensor key_mask = empty({b, t + 1});
  {
    float* m = key_mask.data();
    const int64_t* ids = std::as_const(tokens).data_i64();
    for (int64_t i = 0; i < b; ++i) {
      m[i * (t + 1)] = 1.0f;
      for (int64_t j = 0; j < t; ++j) m[i * (t + 1) + j + 1] = ids[i * t + j] != 0 ? 1.0f : 0.0f;
    }
  }
  const Tensor attention_mask = and_id_ >= 0 ? phrase_mask(tokens, key_mask, and_id_) : key_mask;
  for (const auto& layer : layer_list_) x = layer->forward(x, attention_mask);
  return {norm_out->forward(x), key_mask};
}

// ---- U-Net blocks ----

ResBlock::ResBlock(int64_t in_ch, int64_t out_ch, int64_t temb_dim, int64_t groups, Generator* gen)
    : nn::Module("ResBlock") {
  norm1 = register_module("norm1", std::make_shared<nn::GroupNorm>(groups, in_ch));
  conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(in_ch, out_ch, 3, 1, 1, true, gen));
  time_proj =
      register_module("time_proj", std::make_shared<nn::Linear>(temb_dim, out_ch, true, gen));
  norm2 = register_module("norm2", std::make_shared<nn::GroupNorm>(groups, out_ch));
  conv2 =
      register_module("conv2", std::make_shared<nn::Conv2d>(out_ch, out_ch, 3, 1, 1, true, gen));
  zero_(conv2);
  if (in_ch != out_ch) {
    skip = register_module("skip", std::make_shared<nn::Conv2d>(in_ch, out_ch, 1, 1, 0, true, gen));
  }
}

Tensor ResBlock::forward(const Tensor& x, const Tensor& temb) {
  const Tensor t = time_proj->forward(silu(temb));  // [B, Cout]
  Tensor h = conv1->forward(norm1->forward_silu(x)) + reshape(t, {t.size(0), t.size(1), 1, 1});
  h = conv2->forward(norm2->forward_silu(h));
  return (skip ? skip->forward(x) : x) + h;
}

Tensor query_position_table(int64_t h, int64_t w, int64_t c) {
  INK_CHECK(h >= 1 && w >= 1 && c >= 4 && c % 4 == 0,
            "query_position_table: needs H, W >= 1 and C a positive multiple of 4, got {}x{}x{}", h,
            w, c);
  const int64_t q = c / 4;
  Tensor out = empty({1, h * w, c});
  float* o = out.data();
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      float* row = o + (y * w + x) * c;
      for (int64_t k = 0; k < q; ++k) {
        const double fk = std::numbers::pi * static_cast<double>(k + 1);
        const double ay = fk * (static_cast<double>(y) + 0.5) / static_cast<double>(h);
        const double ax = fk * (static_cast<double>(x) + 0.5) / static_cast<double>(w);
        row[k] = static_cast<float>(std::sin(ay));
        row[q + k] = static_cast<float>(std::cos(ay));
        row[2 * q + k] = static_cast<float>(std::sin(ax));
        row[3 * q + k] = static_cast<float>(std::cos(ax));
      }
    }
  }
  return out;
}

AttentionBlock::AttentionBlock(int64_t ch, int64_t context_dim, int64_t heads, bool self_attention,
                               Generator* gen, int64_t query_side)
    : nn::Module("AttentionBlock") {
  if (query_side > 0) query_pos_ = query_position_table(query_side, query_side, ch);
  if (self_attention) {
    norm_self = register_module("norm_self", std::make_shared<nn::LayerNorm>(ch));
    self_attn = register_module("self_attn", std::make_shared<nn::Attention>(ch, ch, heads, gen));
    zero_(self_attn->to_out);
  }
  norm_cross = register_module("norm_cross", std::make_shared<nn::LayerNorm>(ch));
  cross_attn =
      register_module("cross_attn", std::make_shared<nn::Attention>(ch, context_dim, heads, gen));
  zero_(cross_attn->to_out);
}

Tensor AttentionBlock::forward(const Tensor& x, const Tensor& context, const Tensor& key_mask) {
  const int64_t h = x.size(2), w = x.size(3);
  Tensor t = to_tokens(x);  // [B, H*W, C]
  if (self_attn) {
    const Tensor n = norm_self->forward(t);
    t = t + self_attn->forward(n, n, Tensor());
  }
  if (query_pos_.defined()) {
    INK_CHECK(query_pos_.size(1) == h * w,
              "attention block: built for {} query positions, the image has {}x{}",
              query_pos_.size(1), h, w);
    t = t + cross_attn->forward(norm_cross->forward(t) + query_pos_, context, key_mask);
  } else {
    t = t + cross_attn->forward(norm_cross->forward(t), context, key_mask);
  }
  return from_tokens(t, h, w);
}

Tensor sinusoidal_embedding(const Tensor& timesteps, int64_t dim) {
  INK_CHECK(timesteps.defined() && timesteps.dtype() == DType::Float32 && timesteps.dim() == 1,
            "sinusoidal_embedding: expected Float32 timesteps [B], got {}",
            timesteps.defined() ? shape_str(timesteps.shape()) : std::string("undefined"));
  const int64_t b = timesteps.size(0), half = dim / 2;
  Tensor out = empty({b, 2 * half});
  float* o = out.data();
  const float* t = std::as_const(timesteps).data();
  // In double, then rounded: t f_i reaches ~1000 rad, where float angles are off by 1e-4.
  for (int64_t j = 0; j < half; ++j) {
    const double freq =
        std::exp(-std::log(10000.0) * static_cast<double>(j) / static_cast<double>(half));
    for (int64_t i = 0; i < b; ++i) {
      const double angle = static_cast<double>(t[i]) * freq;
      o[i * 2 * half + j] = static_cast<float>(std::sin(angle));
      o[i * 2 * half + half + j] = static_cast<float>(std::cos(angle));
    }
  }
  return out;
}

UNet::UNet(const DiffusionConfig& config, Generator* gen) : nn::Module("UNet"), config_(config) {
  config.validate();
  const std::vector<int64_t> chs = config.level_channels();
  const auto levels = static_cast<int64_t>(chs.size());
  const int64_t temb = 4 * config.ch;
  // Level i's side, when the cross-attention queries get positions (0: they don't).
  const auto query_side = [&config](int64_t i) {
    return config.query_positions ? config.image_size >> i : int64_t{0};
  };
  time_embed = register_module("time_embed", std::make_shared<nn::Module>("TimeEmbed"));
  time_lin1 =
      time_embed->register_module("lin1", std::make_shared<nn::Linear>(config.ch, temb, true, gen));
  time_lin2 =
      time_embed->register_module("lin2", std::make_shared<nn::Linear>(temb, temb, true, gen));
  conv_in = register_module(
      "conv_in", std::make_shared<nn::Conv2d>(config.in_channels, config.ch, 3, 1, 1, true, gen));
  for (int64_t i = 0; i < levels; ++i) {
    auto level = std::make_shared<UNetLevel>();
    const int64_t in_ch = i > 0 ? chs[i - 1] : config.ch;
    level->res = level->register_module(
        "res", std::make_shared<ResBlock>(in_ch, chs[i], temb, config.groups, gen));
    if (config.has_attention(i)) {
      level->attn = level->register_module(
          "attn", std::make_shared<AttentionBlock>(chs[i], config.context_dim, config.heads, false,
                                                   gen, query_side(i)));
    }
    if (i + 1 < levels) {
      level->downsample = level->register_module(
          "downsample", std::make_shared<nn::Conv2d>(chs[i], chs[i], 3, 2, 1, true, gen));
    }
    down_levels_.push_back(level);
  }
  down = register_module("down", module_list(down_levels_));
  const int64_t last = chs.back();
  mid_res1 =
      register_module("mid_res1", std::make_shared<ResBlock>(last, last, temb, config.groups, gen));
  mid_attn = register_module(
      "mid_attn", std::make_shared<AttentionBlock>(last, config.context_dim, config.heads, true,
                                                   gen, query_side(levels - 1)));
  mid_res2 =
      register_module("mid_res2", std::make_shared<ResBlock>(last, last, temb, config.groups, gen));
  for (int64_t i = 0; i < levels; ++i) {
    auto level = std::make_shared<UNetLevel>();
    level->res = level->register_module(
        "res", std::make_shared<ResBlock>(2 * chs[i], chs[i], temb, config.groups, gen));
    if (config.has_attention(i)) {
      level->attn = level->register_module(
          "attn", std::make_shared<AttentionBlock>(chs[i], config.context_dim, config.heads, false,
                                                   gen, query_side(i)));
    }
    if (i > 0) {
      level->upsample = level->register_module(
          "upsample", std::make_shared<nn::Conv2d>(chs[i], chs[i - 1], 3, 1, 1, true, gen));
    }
    up_levels_.push_back(level);
  }
  up = register_module("up", module_list(up_levels_));
  norm_out = register_module("norm_out", std::make_shared<nn::GroupNorm>(config.groups, config.ch));
  conv_out = register_module(
      "conv_out", std::make_shared<nn::Conv2d>(config.ch, config.in_channels, 3, 1, 1, true, gen));
}

Tensor UNet::forward(const Tensor& x, const Tensor& timesteps, const Tensor& context,
                     const Tensor& key_mask) {
  INK_CHECK(x.defined() && x.dim() == 4 && x.size(1) == config_.in_channels &&
                x.size(2) == config_.image_size && x.size(3) == config_.image_size,
            "unet: expected x [B, {}, {}, {}], got {}", config_.in_channels, config_.image_size,
            config_.image_size, x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  INK_CHECK(timesteps.defined() && timesteps.dim() == 1 && timesteps.size(0) == x.size(0),
            "unet: expected timesteps [{}], got {}", x.size(0),
            timesteps.defined() ? shape_str(timesteps.shape()) : std::string("undefined"));
  const Tensor temb = time_lin2->forward(
      silu(time_lin1->forward(sinusoidal_embedding(timesteps, config_.ch))));  // [B, E]
  Tensor h = conv_in->forward(x);
  std::vector<Tensor> skips;
  for (const auto& level : down_levels_) {
    h = level->res->forward(h, temb);
    if (level->attn) h = level->attn->forward(h, context, key_mask);
    skips.push_back(h);
    if (level->downsample) h = level->downsample->forward(h);
  }
  h = mid_res2->forward(mid_attn->forward(mid_res1->forward(h, temb), context, key_mask), temb);
  for (size_t k = up_levels_.size(); k-- > 0;) {
    const auto& level = up_levels_[k];
    h = level->res->forward(cat({h, skips[k]}, 1), temb);
    if (level->attn) h = level->attn->forward(h, context, key_mask);
    if (level->upsample) h = level->upsample->forward_upsampled(h);  // nearest x2, then 3x3
  }
  return conv_out->forward(norm_out->forward_silu(h));
}

std::vector<UNet::CrossAttentionLayer> UNet::cross_attention_layers() const {
  std::vector<CrossAttentionLayer> out;
  const auto side = [&](size_t level) { return config_.image_size >> level; };
  for (size_t i = 0; i < down_levels_.size(); ++i) {
    if (down_levels_[i]->attn) {
      out.push_back({down_levels_[i]->attn->cross_attn.get(), side(i), side(i)});
    }
  }
  const int64_t last = side(down_levels_.size() - 1);
  out.push_back({mid_attn->cross_attn.get(), last, last});
  for (size_t k = up_levels_.size(); k-- > 0;) {
    if (up_levels_[k]->attn)
      out.push_back({up_levels_[k]->attn->cross_attn.get(), side(k), side(k)});
  }
  return out;
}

std::unique_ptr<Tokenizer> make_tokenizer(const DiffusionConfig& config) {
  if (config.tokenizer == "word") return std::make_unique<WordTokenizer>(config.max_length);
  return std::make_unique<CharTokenizer>(config.max_length);
}

void GenerateOptions::validate() const {
  parse_sampler(sampler);
  INK_CHECK(steps >= 1 && steps <= 1000, "generate: steps must be in [1, 1000], got {}", steps);
  INK_CHECK(std::isfinite(guidance) && guidance >= 0.0 && guidance <= 100.0,
            "generate: guidance must be in [0, 100], got {}", guidance);
  INK_CHECK(std::isfinite(eta) && eta >= 0.0 && eta <= 1.0,
            "generate: eta must be in [0, 1], got {}", eta);
  INK_CHECK(batch >= 1 && batch <= 4096, "generate: batch must be in [1, 4096], got {}", batch);
  guidance_interval.validate();
}

TextToImageDiffusion::TextToImageDiffusion(const DiffusionConfig& config, Generator* gen)
    : ImageModel("TextToImageDiffusion"),
      config_(config),
      tokenizer_((config.validate(), make_tokenizer(config))),
      schedule_(NoiseSchedule::by_name(config.schedule, config.timesteps)) {
  INK_CHECK(tokenizer_->vocab_size() == config.vocab_size,
            "diffusion config: vocab_size {} does not match the {} tokenizer's {}",
            config.vocab_size, config.tokenizer, tokenizer_->vocab_size());
  text_encoder =
      register_module("text_encoder", std::make_shared<DiffusionTextEncoder>(config, gen));
  unet = register_module("unet", std::make_shared<UNet>(config, gen));
}

Tensor TextToImageDiffusion::forward(const Tensor& x_t, const Tensor& timesteps,
                                     const Tensor& tokens) {
  const auto text = text_encoder->forward(tokens);
  return unet->forward(x_t, timesteps, text.context, text.key_mask);
}

ImageFormat TextToImageDiffusion::image_format() const {
  return {config_.in_channels, config_.image_size, config_.image_size};
}

Tensor TextToImageDiffusion::generate(const std::string& prompt, int64_t n, Generator& generator) {
  return generate(prompt, n, generator, GenerateOptions{});
}

namespace {

// What the denoiser receives as its conditioning: the text of 2B rows (B prompts, then B
// negative prompts).
struct TextCondition {
  Tensor context;   // [2B, L, D]
  Tensor key_mask;  // [2B, L]
};

// [2 rows, L] Int64: `rows` copies of the prompt's ids, then `rows` of the negative prompt's.
Tensor cfg_tokens(const Tokenizer& tokenizer, const std::string& prompt,
                  const std::string& negative, int64_t rows) {
  const std::vector<int64_t> ids = tokenizer.encode(prompt);
  const std::vector<int64_t> negative_ids = tokenizer.encode(negative);
  const auto length = static_cast<int64_t>(ids.size());
  Tensor out = empty({2 * rows, length}, DType::Int64);
  int64_t* p = out.data_i64();
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(ids.begin(), ids.end(), p + r * length);
    std::copy(negative_ids.begin(), negative_ids.end(), p + (rows + r) * length);
  }
  return out;
}

// Linear interpolation from `in` samples to `out` with half-pixel centres (PyTorch's
// align_corners=False): output i reads inputs first[i] and second[i] with weight 1 - frac[i] and
// frac[i].
struct Resize {
  std::vector<int64_t> first, second;
  std::vector<double> frac;
  Resize(int64_t in, int64_t out) {
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    for (int64_t i = 0; i < out; ++i) {
      const double source = std::max((static_cast<double>(i) + 0.5) * scale - 0.5, 0.0);
      const auto lower = std::min(static_cast<int64_t>(source), in - 1);
      first.push_back(lower);
      second.push_back(std::min(lower + 1, in - 1));
      frac.push_back(source - static_cast<double>(lower));
    }
  }
};

// What this object represents: the running sums behind AttentionMaps for one chunk of b
// pictures. It watches the U-Net's cross-attention layers and asks each for the conditional
// rows 0..b-1 of its 2b-row batch (or of its b-row batch, outside the guidance interval); each call
// adds the head-averaged weight of every kept context position on the layer's own grid. Resizing is
// linear, so each layer's sum is resized to the picture once, at the end, rather than at every
// step.
class CrossAttentionSum final : public nn::AttentionObserver {
 public:
  CrossAttentionSum(const std::vector<UNet::CrossAttentionLayer>& layers, int64_t rows,
                    std::vector<int64_t> positions, int64_t height, int64_t width)
      : rows_(rows), positions_(std::move(positions)), height_(height), width_(width) {
    for (const UNet::CrossAttentionLayer& layer : layers) {
      const auto size = static_cast<size_t>(rows * static_cast<int64_t>(positions_.size()) *
                                            layer.height * layer.width);
      layers_.push_back({layer, std::vector<double>(size, 0.0)});
    }
  }

  int64_t rows_wanted(const nn::Attention& layer, int64_t batch) const override {
    if (find(layer) == nullptr) return 0;
    // 2b rows for a guided step, b for a step outside the guidance interval (conditional only).
    INK_CHECK(batch == 2 * rows_ || batch == rows_,
              "attention maps: a cross-attention batch of {} for {} pictures", batch, rows_);
    return rows_;
  }

  // weights [rows, heads, h*w, L]
  void record(const nn::Attention& layer, const Tensor& weights) override {
    Watched& watched = *find(layer);
    const int64_t heads = weights.size(1), queries = weights.size(2), keys = weights.size(3);
    INK_CHECK(weights.size(0) == rows_ && queries == watched.layer.height * watched.layer.width,
              "attention maps: cross-attention weights {} for {} pictures of a {}x{} grid",
              shape_str(weights.shape()), rows_, watched.layer.height, watched.layer.width);
    const float* w = weights.data();
    const auto kept = static_cast<int64_t>(positions_.size());
    const double per_head = 1.0 / static_cast<double>(heads);
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t p = 0; p < kept; ++p) {
        const int64_t key = positions_[static_cast<size_t>(p)];
        INK_CHECK(key < keys, "attention maps: position {} of {} keys", key, keys);
        double* sum = watched.sum.data() + (r * kept + p) * queries;
        for (int64_t h = 0; h < heads; ++h) {
          const float* rows = w + (r * heads + h) * queries * keys;
          for (int64_t q = 0; q < queries; ++q) sum[q] += per_head * rows[q * keys + key];
        }
      }
    }
    ++calls_;
  }

  int64_t calls() const { return calls_; }

  // The mean over calls, each layer's sum resized to height x width, into maps [N, P, H, W] at
  // picture `start`.
  void write_mean(Tensor& maps, int64_t start) const {
    const auto kept = static_cast<int64_t>(positions_.size());
    std::vector<double> mean(static_cast<size_t>(rows_ * kept * height_ * width_), 0.0);
    for (const Watched& watched : layers_) {
      const int64_t h = watched.layer.height, w = watched.layer.width;
      const Resize along_y(h, height_), along_x(w, width_);
      for (int64_t map = 0; map < rows_ * kept; ++map) {
        const double* grid = watched.sum.data() + map * h * w;
        double* out = mean.data() + map * height_ * width_;
        for (int64_t y = 0; y < height_; ++y) {
          const int64_t y0 = along_y.first[y] * w, y1 = along_y.second[y] * w;
          const double fy = along_y.frac[y];
          for (int64_t x = 0; x < width_; ++x) {
            const int64_t x0 = along_x.first[x], x1 = along_x.second[x];
            const double fx = along_x.frac[x];
            const double top = (1.0 - fx) * grid[y0 + x0] + fx * grid[y0 + x1];
            const double bottom = (1.0 - fx) * grid[y1 + x0] + fx * grid[y1 + x1];
            out[y * width_ + x] += (1.0 - fy) * top + fy * bottom;
          }
        }
      }
    }
    float* o = maps.data() + start * kept * height_ * width_;
    const double count = static_cast<double>(std::max<int64_t>(calls_, 1));
    for (size_t i = 0; i < mean.size(); ++i) o[i] = static_cast<float>(mean[i] / count);
  }

 private:
  struct Watched {
    UNet::CrossAttentionLayer layer;
    std::vector<double> sum;  // [rows, P, h * w]
  };
  const Watched* find(const nn::Attention& layer) const {
    for (const Watched& watched : layers_) {
      if (watched.layer.layer == &layer) return &watched;
    }
    return nullptr;
  }
  Watched* find(const nn::Attention& layer) {
    return const_cast<Watched*>(std::as_const(*this).find(layer));
  }

  std::vector<Watched> layers_;
  int64_t rows_;
  std::vector<int64_t> positions_;  // context positions kept (0 = the null token)
  int64_t height_, width_;
  int64_t calls_ = 0;  // over all layers and steps
};

}  // namespace

Tensor TextToImageDiffusion::generate(const std::string& prompt, int64_t n, Generator& generator,
                                      const GenerateOptions& options) {
  INK_CHECK(n >= 1 && n <= 100000, "generate: n must be in [1, 100000], got {}", n);
  options.validate();
  nn::InferenceGuard inference;  // no graph, and the module left as it is
  const Sampler sampler = parse_sampler(options.sampler);
  const std::vector<int64_t> timesteps =
      trailing_timesteps(schedule_.num_timesteps(), options.steps);
  const ImageFormat format = image_format();
  Tensor out = empty({n, format.channels, format.height, format.width});
  // The U-Net on x [rows, ...] with the first `rows` rows of the 2b-row context: all of them for
  // a guided step, the conditional half outside the guidance interval.
  const auto unet_eps = [this](const Tensor& x, const Tensor& t, const std::any& cond) {
    const auto& text = std::any_cast<const TextCondition&>(cond);
    const int64_t rows = x.size(0);
    Tensor t_float = empty({rows});
    for (int64_t i = 0; i < rows; ++i) t_float.data()[i] = static_cast<float>(t.data_i64()[i]);
    const Tensor prediction = rows == text.context.size(0)
                                  ? unet->forward(x, t_float, text.context, text.key_mask)
                                  : unet->forward(x, t_float, narrow(text.context, 0, 0, rows),
                                                  narrow(text.key_mask, 0, 0, rows));
    return config_.prediction == "v" ? eps_from_v(schedule_, prediction, x, t) : prediction;
  };
  const Denoiser model = unet_eps, conditional = unet_eps;
  const Denoiser guided = classifier_free_guidance(model, options.guidance, schedule_,
                                                   options.guidance_interval, conditional);
  // The attention maps keep the null token and the prompt's non-padding tokens.
  std::vector<int64_t> kept_positions;
  if (options.attention != nullptr) {
    AttentionMaps& maps = *options.attention;
    maps.tokens.clear();
    kept_positions = {0};
    const std::vector<int64_t> ids = tokenizer_->encode(prompt);
    for (size_t j = 0; j < ids.size(); ++j) {
      if (ids[j] == tokenizer_->pad_id()) continue;
      maps.tokens.push_back(ids[j]);
      kept_positions.push_back(static_cast<int64_t>(j) + 1);
    }
    maps.maps =
        zeros({n, static_cast<int64_t>(kept_positions.size()), format.height, format.width});
    maps.layers = static_cast<int64_t>(unet->cross_attention_layers().size());
    maps.steps = 0;
  }
  for (int64_t start = 0; start < n; start += options.batch) {
    const int64_t b = std::min(options.batch, n - start);
    const Tensor tokens = cfg_tokens(*tokenizer_, prompt, options.negative_prompt, b);
    const auto text = text_encoder->forward(tokens);
    const std::any cond = TextCondition{text.context, text.key_mask};
    const Tensor x_T = randn({b, format.channels, format.height, format.width}, &generator);
    SampleOptions sample_options;
    sample_options.eta = options.eta;
    sample_options.callback = options.callback;
    std::optional<CrossAttentionSum> attention_sum;
    std::optional<nn::AttentionObserverScope> observing;  // only when asked: else no observer
    if (options.attention != nullptr) {
      attention_sum.emplace(unet->cross_attention_layers(), b, kept_positions, format.height,
                            format.width);
      observing.emplace(&*attention_sum);
    }
    const SampleResult result =
        sample(sampler, guided, x_T, cond, schedule_, timesteps, generator, sample_options);
    INK_CHECK(!result.cancelled, "generate: cancelled after {} of {} steps", result.steps_done,
              options.steps);
    if (attention_sum) {
      attention_sum->write_mean(options.attention->maps, start);
      options.attention->steps =
          attention_sum->calls() / std::max<int64_t>(1, options.attention->layers);
    }
    // [-1, 1] -> [0, 1]
    const float* x = result.x0.data();
    float* o = out.data() + start * format.pixels();
    for (int64_t i = 0; i < b * format.pixels(); ++i) {
      o[i] = std::clamp((x[i] + 1.0f) * 0.5f, 0.0f, 1.0f);
    }
  }
  return out;
}

}  // namespace ink::diffusion
