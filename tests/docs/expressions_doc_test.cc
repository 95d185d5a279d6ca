// docs/expressions.md says what the expression compiler does: every ```expr block compiles (or
// fails at the column its tag names) for the shape and aux tensors its tag gives, every
// --score_mod / --mask_mod in the page's commands is one of those blocks, and every variable and
// function of the language is documented.
//
// A block's tag: "expr KIND [seq_len=N] [batch=N] [heads=N] [layout=gqa:HQ/HKV]
// [aux=name:D0[xD1][,...]] [expect=column:C]", KIND score_mod or mask_mod; the body is the text.
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/expr/ast.h"
#include "kernels/expr/program.h"

namespace attnbench {
namespace {

struct Block {
  int line = 0;  // of the opening fence
  std::string info;
  std::string body;
};

std::string ReadDoc() {
  std::ifstream file(ATTNBENCH_EXPRESSIONS_DOC);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::vector<Block> FencedBlocks(const std::string& doc) {
  std::vector<Block> blocks;
  Block* open = nullptr;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(doc, '\n')) {
    ++number;
    if (absl::StartsWith(line, "```")) {
      if (open == nullptr) {
        blocks.push_back({number, std::string(absl::StripAsciiWhitespace(line.substr(3))), ""});
        open = &blocks.back();
      } else {
        open = nullptr;
      }
    } else if (open != nullptr) {
      absl::StrAppend(&open->body, open->body.empty() ? "" : "\n", line);
    }
  }
  return blocks;
}

int64_t Int(const std::string& text) {
  int64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(text, &v)) << text;
  return v;
}

struct Example {
  expr::Kind kind = expr::Kind::kScoreMod;
  expr::Env env;
  std::vector<expr::AuxTensor> aux;
  int expect_column = 0;  // 0: must compile
};

Example FromTag(const Block& block) {
  Example e;
  std::vector<std::string> words = absl::StrSplit(block.info, ' ', absl::SkipEmpty());
  EXPECT_GE(words.size(), 2u) << "line " << block.line;
  if (words.size() < 2) return e;
  EXPECT_TRUE(words[1] == "score_mod" || words[1] == "mask_mod") << "line " << block.line;
  e.kind = words[1] == "mask_mod" ? expr::Kind::kMaskMod : expr::Kind::kScoreMod;
  for (size_t k = 2; k < words.size(); ++k) {
    const std::vector<std::string> kv = absl::StrSplit(words[k], absl::MaxSplits('=', 1));
    if (kv.size() != 2) {
      ADD_FAILURE() << "line " << block.line << ": " << words[k] << " is not key=value";
      continue;
    }
    if (kv[0] == "seq_len") {
      e.env.seq_q = e.env.seq_kv = Int(kv[1]);
    } else if (kv[0] == "batch") {
      e.env.batch = Int(kv[1]);
    } else if (kv[0] == "heads") {
      e.env.output_heads = e.env.query_heads = e.env.kv_heads = Int(kv[1]);
    } else if (kv[0] == "layout") {
      const std::vector<std::string> counts = absl::StrSplit(absl::StripPrefix(kv[1], "gqa:"), '/');
      if (counts.size() != 2) {
        ADD_FAILURE() << "line " << block.line << ": layout " << kv[1];
        continue;
      }
      e.env.output_heads = e.env.query_heads = Int(counts[0]);
      e.env.kv_heads = Int(counts[1]);
    } else if (kv[0] == "aux") {
      for (absl::string_view item : absl::StrSplit(kv[1], ',')) {
        const std::vector<std::string> parts = absl::StrSplit(item, ':');
        if (parts.size() != 2) {
          ADD_FAILURE() << "line " << block.line << ": aux " << item;
          continue;
        }
        expr::AuxTensor t;
        t.name = parts[0];
        int64_t elements = 1;
        for (absl::string_view d : absl::StrSplit(parts[1], 'x')) {
          t.shape.push_back(Int(std::string(d)));
          elements *= t.shape.back();
        }
        t.values.assign(elements, 0.0f);
        e.aux.push_back(std::move(t));
      }
    } else if (kv[0] == "expect") {
      e.expect_column = static_cast<int>(Int(std::string(absl::StripPrefix(kv[1], "column:"))));
    } else {
      ADD_FAILURE() << "line " << block.line << ": unknown tag attribute " << kv[0];
    }
  }
  return e;
}

TEST(ExpressionsDocTest, EveryExprBlockCompilesOrFailsWhereItSays) {
  int checked = 0, refused = 0;
  for (const Block& block : FencedBlocks(ReadDoc())) {
    if (!absl::StartsWith(block.info, "expr")) continue;
    SCOPED_TRACE(absl::StrCat("docs/expressions.md line ", block.line, ": ", block.body));
    Example e = FromTag(block);
    e.env.aux = &e.aux;
    absl::StatusOr<expr::Program> program = expr::Compile(block.body, e.kind, e.env);
    if (e.expect_column == 0) {
      EXPECT_TRUE(program.ok()) << program.status();
    } else {
      ASSERT_FALSE(program.ok());
      EXPECT_EQ(program.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(program.status().message()),
                  ::testing::StartsWith(absl::StrCat("column ", e.expect_column, ": ")));
      ++refused;
    }
    ++checked;
  }
  // The six worked examples and the rest: a page that lost its blocks fails here.
  EXPECT_GE(checked, 10);
  EXPECT_GE(refused, 3);
}

// "--score_mod='...'" in a command must be an expr block of that kind, so the commands show only
// what the test compiled.
TEST(ExpressionsDocTest, CommandsUseTheCompiledExpressions) {
  const std::vector<Block> blocks = FencedBlocks(ReadDoc());
  std::map<std::string, std::vector<std::string>> compiled;  // kind -> bodies
  for (const Block& block : blocks) {
    if (!absl::StartsWith(block.info, "expr ")) continue;
    const std::vector<std::string> words = absl::StrSplit(block.info, ' ', absl::SkipEmpty());
    compiled[words[1]].push_back(block.body);
  }
  int commands = 0;
  for (const Block& block : blocks) {
    if (block.info != "sh") continue;
    for (const char* kind : {"score_mod", "mask_mod"}) {
      const std::string flag = absl::StrCat("--", kind, "='");
      for (size_t at = block.body.find(flag); at != std::string::npos;
           at = block.body.find(flag, at + 1)) {
        const size_t start = at + flag.size();
        const std::string text = block.body.substr(start, block.body.find('\'', start) - start);
        EXPECT_THAT(compiled[kind], ::testing::Contains(text))
            << "line " << block.line << ": --" << kind << "='" << text << "'";
        ++commands;
      }
    }
  }
  EXPECT_GE(commands, 6);
}

TEST(ExpressionsDocTest, EveryNameOfTheLanguageIsDocumented) {
  const std::string doc = ReadDoc();
  for (int v = 0; v < expr::kNumVars; ++v) {
    const char* name = expr::VarName(static_cast<expr::Var>(v));
    EXPECT_THAT(doc, ::testing::HasSubstr(absl::StrCat("| `", name, "` |"))) << name;
  }
  for (int f = 0; f <= static_cast<int>(expr::Func::kCeil); ++f) {
    const char* name = expr::FuncName(static_cast<expr::Func>(f));
    EXPECT_THAT(doc, ::testing::HasSubstr(absl::StrCat("`", name, "("))) << name;
  }
}

}  // namespace
}  // namespace attnbench
