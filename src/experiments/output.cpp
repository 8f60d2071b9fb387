#include "output.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <sstream>
#include <thread>

#include "bnorm/error.hpp"

namespace bnorm::exp {

Datasets datasets(const Context& ctx, std::int64_t quick_train) {
  Datasets d{ctx.train, ctx.test};
  if (ctx.quick) {
    d.train.truncate(quick_train);
    d.test.truncate(1000);
  }
  return d;
}

std::string num(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) return num(v);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

CsvWriter::CsvWriter(std::string path, std::vector<std::string> header)
    : path_(std::move(path)), width_(header.size()), out_(path_) {
  if (!out_) fail_file(path_, "cannot create the CSV file");
  row(header);
}

void CsvWriter::row(const std::vector<std::string>& cells) {
  if (cells.size() != width_)
    throw Error(path_ + ": CSV row has " + std::to_string(cells.size()) + " fields, the header " +
                std::to_string(width_));
  for (std::size_t i = 0; i < cells.size(); ++i) out_ << (i ? "," : "") << csv_field(cells[i]);
  out_ << '\n';
}

void CsvWriter::close() {
  if (!out_.is_open()) return;
  out_.close();
  if (out_.fail()) fail_file(path_, "writing the CSV file failed");
}

CsvWriter::~CsvWriter() {
  if (out_.is_open()) out_.close();
}

namespace {

// Gnuplot string literal in single quotes ('' stands for one quote).
std::string gp_quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

std::string gnuplot_script(const Figure& f) {
  std::ostringstream gp;
  gp << "set terminal pngcairo size 800,500 font 'sans,10'\n"
     << "set output " << gp_quote(f.png) << "\n"
     << "set datafile separator ','\n"
     << "set title " << gp_quote(f.title) << " noenhanced\n"
     << "set xlabel " << gp_quote(f.xlabel) << "\n"
     << "set ylabel " << gp_quote(f.ylabel) << "\n"
     << "set grid\nset key below noenhanced\nset format x '%g'\n";
  if (f.logx) gp << "set logscale x " << f.logx_base << "\n";
  if (f.logy) gp << "set logscale y\n";
  if (!f.xrange.empty()) gp << "set xrange " << f.xrange << "\n";
  if (!f.yrange.empty()) gp << "set yrange " << f.yrange << "\n";
  gp << "plot ";
  for (std::size_t i = 0; i < f.series.size(); ++i) {
    const Series& s = f.series[i];
    gp << (i ? ", \\\n     " : "") << gp_quote(s.csv) << " every ::1 using " << s.x_col << ":";
    // The run key is matched against the first CSV field, which gnuplot
    // splits at every comma, quoted or not.
    if (s.run.find(',') != std::string::npos)
      throw Error("plot " + f.png + ": run name '" + s.run + "' has a comma, which gnuplot cannot match");
    if (s.run.empty())
      gp << s.y_col;
    else
      gp << "(strcol(1) eq " << gp_quote(s.run) << " ? column(" << s.y_col << ") : 1/0)";
    gp << " with "
       << (!s.style.empty() ? s.style
           : f.points       ? "linespoints pt 7 ps 0.8 lw 2"
                            : "lines lw 2")
       << " title " << gp_quote(s.title);
  }
  gp << "\n";
  return gp.str();
}

void render(const Figure& figure, const std::string& dir) {
  const std::string script = figure.png + ".gp";
  {
    std::ofstream out(std::filesystem::path(dir) / script);
    out << gnuplot_script(figure);
    if (!out) fail_file(dir + "/" + script, "cannot write the gnuplot script");
  }
  const std::string cmd = "cd " + shell_quote(dir) + " && gnuplot " + shell_quote(script) + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw Error("cannot run gnuplot for " + dir + "/" + figure.png);
  std::string output;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) output += buf;
  const int status = ::pclose(p);
  // gnuplot warns about empty series (a run that diverged at once) without failing.
  if (status != 0) throw Error("gnuplot failed on " + dir + "/" + script + ": " + output);
}

void require_gnuplot() {
  const int status = std::system("gnuplot -e \"set terminal pngcairo\" >/dev/null 2>&1");
  if (status != 0)
    throw Error(
        "the experiments draw their plots with gnuplot and its pngcairo terminal, which could not be run "
        "(install it: apt-get install gnuplot-nox)");
}

std::string machine_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) model = line.substr(colon + 2);
      break;
    }
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " cores";
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

void Report::table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::string md = "|";
  for (const auto& h : header) md += " " + h + " |";
  md += "\n|";
  for (std::size_t i = 0; i < header.size(); ++i) md += "---|";
  md += "\n";
  for (const auto& r : rows) {
    md += "|";
    for (const auto& c : r) md += " " + c + " |";
    md += "\n";
  }
  body_ += md + "\n";
}

void Report::write(const std::string& dir, const Context& ctx, double seconds) const {
  const std::string path = dir + "/report.md";
  std::ofstream out(path);
  out << "# " << title_ << "\n\n" << summary_ << "\n\n## Conclusions (computed from the measurements below)\n\n";
  if (conclusions_.empty()) out << "- None could be drawn: see the tables.\n";
  for (const auto& c : conclusions_) out << "- " << c << "\n";
  out << body_;
  out << "\n## Run\n\n"
      << "- command: `" << ctx.command_line << "`\n"
      << "- seed: " << ctx.seed << ", threads: " << ctx.threads << (ctx.quick ? ", quick variant" : ", full variant")
      << "\n"
      << "- machine: " << machine_description() << "\n"
      << "- date: " << utc_now() << "\n"
      << "- duration: " << fixed(seconds, 1) << " s\n";
  out.close();
  if (!out) fail_file(path, "cannot write the report");
}

}  // namespace bnorm::exp
