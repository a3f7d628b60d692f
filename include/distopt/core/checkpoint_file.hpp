#pragma once
// Checkpoint files, written atomically: a crash at any moment leaves at `path` either the
// file that was there before or the complete new one, never part of one. The bytes go to a
// temporary file in the same directory (mkstemp: mode 0600, a name no other writer uses),
// which is flushed to the disk (fsync) and renamed over `path` — rename(2) replaces a name
// atomically within a file system — and then the directory is flushed, so that the rename
// itself survives a power loss. A temporary that a crash leaves behind is truncated, so
// optimizer::load refuses it (core/checkpoint.hpp). POSIX.
//
//   distopt::save_checkpoint(opt, "run/rank-" + std::to_string(rank) + ".ckpt");
//   distopt::load_checkpoint(opt, "run/rank-" + std::to_string(rank) + ".ckpt");
//   distopt::write_file_atomically(path, [&](std::ostream& out) { out << anything; });

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include "distopt/core/errors.hpp"

namespace distopt {

namespace detail::checkpoint {

// An output stream buffer on a file descriptor: 1 MiB of buffer, written with write(2).
class fd_buffer : public std::streambuf {
 public:
  explicit fd_buffer(int fd) : fd_(fd), buffer_(std::size_t{1} << 20) {
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }

 protected:
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  bool drain() {
    const char* p = pbase();
    while (p < pptr()) {
      const ssize_t n = ::write(fd_, p, static_cast<std::size_t>(pptr() - p));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      p += n;
    }
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return true;
  }

  int fd_;
  std::vector<char> buffer_;
};

[[noreturn]] inline void file_failure(const std::filesystem::path& path, const std::string& what, int error) {
  throw checkpoint_error("checkpoint file " + path.string() + ": " + what + " (" + std::strerror(error) + ")");
}

}  // namespace detail::checkpoint

/// Replaces the file at `path` by what write(std::ostream&) writes, atomically (see above).
/// Throws checkpoint_error naming the file and the system's reason if any step fails, and
/// then removes the temporary; the file at `path` is then the one that was there before.
template <class Write>
void write_file_atomically(const std::filesystem::path& path, Write&& write) {
  namespace ck = detail::checkpoint;
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::string temporary = (dir / (path.filename().string() + ".tmp.XXXXXX")).string();
  const int fd = ::mkstemp(temporary.data());
  if (fd < 0) ck::file_failure(path, "cannot create a temporary file in " + dir.string(), errno);
  bool open = true;
  try {
    {
      ck::fd_buffer buffer(fd);
      std::ostream out(&buffer);
      write(out);
      out.flush();
      if (!out) ck::file_failure(path, "writing " + temporary + " failed", errno);
    }
    if (::fsync(fd) != 0) ck::file_failure(path, "fsync of " + temporary + " failed", errno);
    open = false;
    if (::close(fd) != 0) ck::file_failure(path, "closing " + temporary + " failed", errno);
    if (::rename(temporary.c_str(), path.c_str()) != 0)
      ck::file_failure(path, "renaming " + temporary + " over it failed", errno);
  } catch (...) {
    if (open) ::close(fd);
    ::unlink(temporary.c_str());
    throw;
  }
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd < 0) ck::file_failure(path, "cannot open its directory to flush the rename", errno);
  const int synced = ::fsync(dir_fd), error = errno;
  ::close(dir_fd);
  if (synced != 0) ck::file_failure(path, "fsync of its directory failed", error);
}

/// Saves `opt` (optimizer::save) to the file `path`, atomically.
template <class Optimizer>
void save_checkpoint(const Optimizer& opt, const std::filesystem::path& path) {
  write_file_atomically(path, [&](std::ostream& out) { opt.save(out); });
}

/// Loads `opt` (optimizer::load) from the file `path`; a missing or unreadable file is a checkpoint_error.
template <class Optimizer>
void load_checkpoint(Optimizer& opt, const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::checkpoint::file_failure(path, "cannot open it", errno);
  opt.load(in);
}

}  // namespace distopt
