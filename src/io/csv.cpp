#include "bnorm/io/csv.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <system_error>
#include <unordered_map>

#include "bnorm/error.hpp"
#include "bnorm/io/idx.hpp"

namespace bnorm {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// A cell as it appears in a message: a long or multi-line one would bury the
// rest of the message.
std::string shown(std::string_view cell) {
  std::string s;
  for (char c : cell.substr(0, 40)) s += c == '\n' ? ' ' : c;
  return cell.size() > 40 ? s + "..." : s;
}

std::string at_line(std::int64_t line) { return "line " + std::to_string(line); }

struct Record {
  std::vector<std::string> fields;
  std::int64_t line = 0;
  bool blank = false;  // nothing but whitespace, and no quotes
};

// Splits the text into records, one call per record; a record spans several
// lines when a quoted field holds newlines, and line_ follows them.
class RecordReader {
 public:
  RecordReader(std::string_view text, const std::string& name) : text_(text), name_(name) {
    if (text_.starts_with("\xEF\xBB\xBF")) pos_ = 3;
  }

  bool next(Record& r) {
    if (pos_ >= text_.size()) return false;
    r.fields.clear();
    r.line = line_;
    bool any_quote = false;
    while (true) {
      while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
      std::string field;
      if (pos_ < text_.size() && text_[pos_] == '"') {
        any_quote = true;
        field = quoted(r.fields.size() + 1);
      } else {
        const std::size_t end = text_.find_first_of(",\n", pos_);
        const std::size_t stop = end == std::string_view::npos ? text_.size() : end;
        field = trim(text_.substr(pos_, stop - pos_));
        pos_ = stop;
      }
      r.fields.push_back(std::move(field));
      if (pos_ >= text_.size()) break;
      const char sep = text_[pos_++];
      if (sep == '\n') {
        ++line_;
        break;
      }
    }
    r.blank = !any_quote && r.fields.size() == 1 && r.fields[0].empty();
    return true;
  }

 private:
  std::string_view text_;
  const std::string& name_;
  std::size_t pos_ = 0;
  std::int64_t line_ = 1;

  // A quoted field from its opening quote up to the separator after it.
  std::string quoted(std::size_t column) {
    const std::int64_t open_line = line_;
    std::string field;
    ++pos_;
    while (true) {
      if (pos_ >= text_.size())
        fail_file(name_, at_line(open_line) + ", column " + std::to_string(column) +
                             ": unterminated quoted field (the file ends before its closing quote)");
      const char c = text_[pos_++];
      if (c == '"') {
        if (pos_ < text_.size() && text_[pos_] == '"') {
          field += '"';
          ++pos_;
          continue;
        }
        break;
      }
      if (c == '\n') ++line_;
      field += c;
    }
    while (pos_ < text_.size() && is_blank(text_[pos_])) ++pos_;
    if (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '\n')
      fail_file(name_, at_line(line_) + ", column " + std::to_string(column) + ": unexpected '" +
                           shown(text_.substr(pos_, 1)) +
                           "' after a closing quote (a quote inside a quoted field is written \"\")");
    return std::string(trim(field));
  }
};

}  // namespace

const std::string& CsvTable::cell(std::int64_t row, std::int64_t col) const {
  if (row < 0 || row >= rows || col < 0 || col >= cols())
    throw Error("CSV cell (row " + std::to_string(row) + ", column " + std::to_string(col) +
                ") is outside the table (" + std::to_string(rows) + " rows, " + std::to_string(cols()) + " columns)");
  return cells[static_cast<std::size_t>(row * cols() + col)];
}

std::int64_t CsvTable::column(const std::string& name) const {
  for (std::size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return static_cast<std::int64_t>(i);
  return -1;
}

CsvTable parse_csv(std::string_view text, const std::string& name) {
  // A NUL never belongs in CSV text; finding one first gives one clear message
  // for binary files and UTF-16 instead of a confusing parse error.
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    std::int64_t line = 1;
    for (std::size_t i = 0; i < nul; ++i) line += text[i] == '\n';
    fail_file(name, at_line(line) + ": NUL byte (binary data, or UTF-16 text? bnorm reads UTF-8 CSV)");
  }
  CsvTable t;
  RecordReader reader(text, name);
  Record r;
  bool have_header = false;
  std::int64_t header_line = 0;
  while (reader.next(r)) {
    if (r.blank) continue;
    if (!have_header) {
      // A map, not a scan per column, so a header of many columns stays linear.
      std::unordered_map<std::string_view, std::size_t> seen;
      for (std::size_t j = 0; j < r.fields.size(); ++j) {
        const std::string where = at_line(r.line) + ", column " + std::to_string(j + 1);
        if (r.fields[j].empty()) fail_file(name, where + ": empty column name in the header");
        const auto [it, fresh] = seen.emplace(r.fields[j], j);
        if (!fresh)
          fail_file(name, where + ": duplicate column name '" + shown(r.fields[j]) + "' (also column " +
                              std::to_string(it->second + 1) + ")");
      }
      t.header = std::move(r.fields);
      header_line = r.line;
      have_header = true;
      continue;
    }
    if (r.fields.size() != t.header.size())
      fail_file(name, at_line(r.line) + " has " + std::to_string(r.fields.size()) + " fields, the header has " +
                          std::to_string(t.header.size()));
    for (std::size_t j = 0; j < r.fields.size(); ++j) {
      if (r.fields[j].empty())
        fail_file(name, at_line(r.line) + ", column " + std::to_string(j + 1) + " ('" + shown(t.header[j]) +
                            "'): empty cell");
      t.cells.push_back(std::move(r.fields[j]));
    }
    t.line.push_back(r.line);
    ++t.rows;
  }
  if (!have_header) fail_file(name, "empty file: no header line and no data");
  if (t.rows == 0) fail_file(name, at_line(header_line) + ": header only, no data rows");
  return t;
}

CsvTable read_csv(const std::string& path) {
  // 1 GiB of text. Cells are stored as strings, a few times the text's size
  // at worst, so the cap is lower than for binary arrays.
  const std::vector<std::uint8_t> bytes = read_file_maybe_gzip(path, std::uint64_t{1} << 30);
  return parse_csv(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
}

double csv_number(const CsvTable& t, std::int64_t row, std::int64_t col, const std::string& name) {
  const std::string& cell = t.cell(row, col);
  const auto where = [&] {
    return at_line(t.line[static_cast<std::size_t>(row)]) + ", column " + std::to_string(col + 1) + " ('" +
           shown(t.header[static_cast<std::size_t>(col)]) + "'): ";
  };
  std::string_view s = cell;
  // from_chars takes no '+'; a spreadsheet may write one.
  if (s.size() > 1 && s[0] == '+' && s[1] != '-' && s[1] != '+') s.remove_prefix(1);
  double v = 0.0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (end != s.data() + s.size() || (ec != std::errc{} && ec != std::errc::result_out_of_range))
    fail_file(name, where() + "'" + shown(cell) + "' is not a number");
  // Out of range is either an overflow (an infinity, refused below) or an
  // underflow that strtod rounds to zero or a denormal, as Python would.
  if (ec == std::errc::result_out_of_range) v = std::strtod(std::string(s).c_str(), nullptr);
  if (!std::isfinite(v)) fail_file(name, where() + "non-finite value '" + shown(cell) + "'");
  return v;
}

bool csv_is_integer(std::string_view cell) {
  if (!cell.empty() && (cell[0] == '+' || cell[0] == '-')) cell.remove_prefix(1);
  if (cell.empty()) return false;
  for (char c : cell)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace bnorm
