// lmpipe's batch scorer over KenLM: many tokenized lines per call, each word hashed once.
//
// Why this exists: `kenlm.Model.score` runs KenLM's loop per line, but lmpipe had to find each line's OOV words
// itself (a second hash of every token, plus Python per OOV word) and join the tokens into the string KenLM
// splits again; together that held `lmpipe score` at ~0.6-0.7x `query` per core.  Here one C call takes a batch
// of lines as Arrow lays them out (the tokens' bytes back to back, token offsets, line offsets) and returns,
// per line, what `query` prints and lmpipe records: the float32 sum of log10 p over the words and `</s>`, the
// OOV count and the OOV words' log10 p.  The loop is `query`'s own: the concrete model class (templated, as
// lm/ngram_query.hh does, not the virtual interface), `Vocabulary::Index` once per word, `FullScore`.
//
// Equalities the Python side relies on (tests/test_kenlm_native.py checks them against `kenlm.Model`):
//  * words are the tokens split on ASCII whitespace (space, \t \n \v \f \r), as `bytes.split()` splits the joined
//    line `Model.score` reads, so every token boundary is a word boundary and runs of whitespace vanish;
//  * the line total is accumulated in a float, word by word then `</s>`, as `Model.score` adds (`cdef float`);
//  * a word is OOV when its index is 0 (`<unk>`), as `full_scores` reports it; the OOV sum is a double.
// Built by .ci/build_kenlm.sh against KenLM's static libraries; loaded with ctypes by lm/kenlm_native.py, which
// falls back to the `kenlm` module when the library is absent.  Errors never cross the C boundary as C++
// exceptions: they are copied into the caller's buffer.

#include "lm/binary_format.hh"
#include "lm/model.hh"
#include "util/string_piece.hh"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>

namespace {

inline bool IsSpace(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Byte length of the Unicode whitespace character at [p, end), or 0: the 29 code points Arrow's
// utf8_split_whitespace (and Python's str.isspace) split on -- tests/test_kenlm_native.py checks every code point.
inline std::size_t UnicodeSpace(const unsigned char *p, const unsigned char *end) {
  const unsigned char c = *p;
  if (c < 0x80) return (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) ? 1 : 0;
  if (c == 0xc2) return (p + 1 < end && (p[1] == 0x85 || p[1] == 0xa0)) ? 2 : 0;  // U+0085, U+00A0
  if (p + 2 >= end) return 0;
  if (c == 0xe1) return (p[1] == 0x9a && p[2] == 0x80) ? 3 : 0;  // U+1680
  if (c == 0xe3) return (p[1] == 0x80 && p[2] == 0x80) ? 3 : 0;  // U+3000
  if (c != 0xe2) return 0;
  if (p[1] == 0x80) {  // U+2000..U+200A, U+2028, U+2029, U+202F
    const unsigned char d = p[2];
    return (d <= 0x8a || d == 0xa8 || d == 0xa9 || d == 0xaf) && d >= 0x80 ? 3 : 0;
  }
  return (p[1] == 0x81 && p[2] == 0x9f) ? 3 : 0;  // U+205F
}

// A literal special the tokenize stage's `normalize.literal_specials` policy must decide about.
inline bool IsSpecial(const char *w, std::size_t n) {
  return (n == 3 && !std::memcmp(w, "<s>", 3)) || (n == 4 && !std::memcmp(w, "</s>", 4)) ||
         (n == 5 && !std::memcmp(w, "<unk>", 5));
}

// Calls `word(start, length)` for every whitespace-separated word of bytes [begin, end).
template <class Word> inline void ForEachWord(const char *begin, const char *end, Word &&word) {
  const char *p = begin;
  while (p < end) {
    while (p < end && IsSpace(static_cast<unsigned char>(*p))) ++p;
    const char *start = p;
    while (p < end && !IsSpace(static_cast<unsigned char>(*p))) ++p;
    if (p > start) word(start, static_cast<std::size_t>(p - start));
  }
}

class Scorer {
 public:
  virtual ~Scorer() {}
  virtual int Order() const = 0;
  virtual void LineSums(const char *data, const int64_t *token_offsets, const int64_t *line_offsets,
                        int64_t lines, double *total, int64_t *oov, double *oov_log10) const = 0;
  virtual int64_t TokenScores(const char *data, const int64_t *token_offsets, const int64_t *line_offsets,
                              int64_t lines, float *log10, uint8_t *oov, int64_t capacity) const = 0;
  virtual bool Knows(const char *word, std::size_t length) const = 0;
  virtual void TextSums(const char *data, const int64_t *line_offsets, int64_t lines, double *total, int64_t *oov,
                        double *oov_log10, int64_t *words, uint8_t *special) const = 0;
};

// One sentence's running figures, word by word then `</s>`: the float total as `Model.score` adds it, and the
// OOV words' count and double sum (index 0 is `<unk>`).
struct Sentence {
  lm::ngram::State state, next;
  float sum = 0.0f;
  int64_t unknown = 0;
  double unknown_sum = 0.0;

  template <class Model> explicit Sentence(const Model &model) : state(model.BeginSentenceState()) {}

  template <class Model> void Add(const Model &model, lm::WordIndex index) {
    const float log10_p = model.FullScore(state, index, next).prob;
    state = next;
    sum += log10_p;
    if (index == 0) {
      ++unknown;
      unknown_sum += log10_p;
    }
  }
};

template <class Model> class ModelScorer : public Scorer {
 public:
  ModelScorer(const char *path, const lm::ngram::Config &config) : model_(path, config) {}

  int Order() const override { return model_.Order(); }

  bool Knows(const char *word, std::size_t length) const override {
    return model_.GetVocabulary().Index(StringPiece(word, length)) != 0;
  }

  void LineSums(const char *data, const int64_t *token_offsets, const int64_t *line_offsets, int64_t lines,
                double *total, int64_t *oov, double *oov_log10) const override {
    const typename Model::Vocabulary &vocab = model_.GetVocabulary();
    const lm::WordIndex end_sentence = vocab.EndSentence();
    for (int64_t line = 0; line < lines; ++line) {
      Sentence sentence(model_);
      for (int64_t t = line_offsets[line]; t < line_offsets[line + 1]; ++t) {
        ForEachWord(data + token_offsets[t], data + token_offsets[t + 1],
                    [&](const char *w, std::size_t n) { sentence.Add(model_, vocab.Index(StringPiece(w, n))); });
      }
      sentence.Add(model_, end_sentence);
      total[line] = sentence.sum;
      oov[line] = sentence.unknown;
      oov_log10[line] = sentence.unknown_sum;
    }
  }

  // Whole lines of text split on Unicode whitespace, as the whitespace tokenizer splits them (no token arrays
  // built): per line the sums of LineSums, its word count and whether a word is a literal special.
  void TextSums(const char *data, const int64_t *line_offsets, int64_t lines, double *total, int64_t *oov,
                double *oov_log10, int64_t *words, uint8_t *special) const override {
    const typename Model::Vocabulary &vocab = model_.GetVocabulary();
    const lm::WordIndex end_sentence = vocab.EndSentence();
    for (int64_t line = 0; line < lines; ++line) {
      Sentence sentence(model_);
      int64_t count = 0;
      bool has_special = false;
      const unsigned char *p = reinterpret_cast<const unsigned char *>(data + line_offsets[line]);
      const unsigned char *end = reinterpret_cast<const unsigned char *>(data + line_offsets[line + 1]);
      while (p < end) {
        std::size_t space;
        while (p < end && (space = UnicodeSpace(p, end))) p += space;
        const unsigned char *start = p;
        while (p < end && !UnicodeSpace(p, end)) ++p;
        if (p == start) continue;
        const char *w = reinterpret_cast<const char *>(start);
        const std::size_t n = static_cast<std::size_t>(p - start);
        has_special = has_special || IsSpecial(w, n);
        sentence.Add(model_, vocab.Index(StringPiece(w, n)));
        ++count;
      }
      sentence.Add(model_, end_sentence);
      total[line] = sentence.sum;
      oov[line] = sentence.unknown;
      oov_log10[line] = sentence.unknown_sum;
      words[line] = count;
      special[line] = has_special;
    }
  }

  int64_t TokenScores(const char *data, const int64_t *token_offsets, const int64_t *line_offsets, int64_t lines,
                      float *log10, uint8_t *oov, int64_t capacity) const override {
    const typename Model::Vocabulary &vocab = model_.GetVocabulary();
    int64_t k = 0;
    for (int64_t line = 0; line < lines; ++line) {
      lm::ngram::State state = model_.BeginSentenceState(), next;
      for (int64_t t = line_offsets[line]; t < line_offsets[line + 1]; ++t) {
        bool full = false;
        ForEachWord(data + token_offsets[t], data + token_offsets[t + 1], [&](const char *w, std::size_t n) {
          if (k >= capacity) { full = true; return; }
          const lm::WordIndex index = vocab.Index(StringPiece(w, n));
          log10[k] = model_.FullScore(state, index, next).prob;
          oov[k++] = index == 0;
          state = next;
        });
        if (full) return -1;
      }
      if (k >= capacity) return -1;
      log10[k] = model_.FullScore(state, vocab.EndSentence(), next).prob;
      oov[k++] = 0;
    }
    return k;
  }

 private:
  Model model_;
};

Scorer *Open(const char *path) {
  lm::ngram::Config config;
  config.messages = nullptr;  // no banner or progress bar on stderr: the caller reports what it loaded
  lm::ngram::ModelType type = lm::ngram::PROBING;  // an ARPA file loads as a probing model, as LoadVirtual does
  lm::ngram::RecognizeBinary(path, type);
  switch (type) {
    case lm::ngram::PROBING: return new ModelScorer<lm::ngram::ProbingModel>(path, config);
    case lm::ngram::REST_PROBING: return new ModelScorer<lm::ngram::RestProbingModel>(path, config);
    case lm::ngram::TRIE: return new ModelScorer<lm::ngram::TrieModel>(path, config);
    case lm::ngram::QUANT_TRIE: return new ModelScorer<lm::ngram::QuantTrieModel>(path, config);
    case lm::ngram::ARRAY_TRIE: return new ModelScorer<lm::ngram::ArrayTrieModel>(path, config);
    case lm::ngram::QUANT_ARRAY_TRIE: return new ModelScorer<lm::ngram::QuantArrayTrieModel>(path, config);
  }
  return nullptr;
}

void CopyError(const char *message, char *error, std::size_t size) {
  if (!error || size == 0) return;
  std::strncpy(error, message, size - 1);
  error[size - 1] = '\0';
}

}  // namespace

extern "C" {

// Bumped whenever a signature below changes; lm/kenlm_native.py refuses a library of another version.
int lmpipe_kenlm_abi(void) { return 2; }

void *lmpipe_kenlm_open(const char *path, char *error, std::size_t error_size) {
  try {
    Scorer *scorer = Open(path);
    if (!scorer) CopyError("unrecognised KenLM model type", error, error_size);
    return scorer;
  } catch (const std::exception &e) {
    CopyError(e.what(), error, error_size);
  } catch (...) {
    CopyError("unknown C++ exception while loading the model", error, error_size);
  }
  return nullptr;
}

void lmpipe_kenlm_close(void *scorer) { delete static_cast<Scorer *>(scorer); }

int lmpipe_kenlm_order(const void *scorer) { return static_cast<const Scorer *>(scorer)->Order(); }

int lmpipe_kenlm_knows(const void *scorer, const char *word, std::size_t length) {
  return static_cast<const Scorer *>(scorer)->Knows(word, length) ? 1 : 0;
}

void lmpipe_kenlm_line_sums(const void *scorer, const char *data, const int64_t *token_offsets,
                            const int64_t *line_offsets, int64_t lines, double *total, int64_t *oov,
                            double *oov_log10) {
  static_cast<const Scorer *>(scorer)->LineSums(data, token_offsets, line_offsets, lines, total, oov, oov_log10);
}

void lmpipe_kenlm_text_sums(const void *scorer, const char *data, const int64_t *line_offsets, int64_t lines,
                            double *total, int64_t *oov, double *oov_log10, int64_t *words, uint8_t *special) {
  static_cast<const Scorer *>(scorer)->TextSums(data, line_offsets, lines, total, oov, oov_log10, words, special);
}

int64_t lmpipe_kenlm_token_scores(const void *scorer, const char *data, const int64_t *token_offsets,
                                  const int64_t *line_offsets, int64_t lines, float *log10, uint8_t *oov,
                                  int64_t capacity) {
  return static_cast<const Scorer *>(scorer)->TokenScores(data, token_offsets, line_offsets, lines, log10, oov,
                                                          capacity);
}

}  // extern "C"
