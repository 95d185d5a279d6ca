#include "server/backend_select.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

using ::testing::HasSubstr;

// Selection only reads names, priorities, devices and CheckSupported; nothing here runs.
class FakeBackend : public Backend {
 public:
  FakeBackend(std::string name, int priority, bool supports, int devices)
      : name_(std::move(name)), priority_(priority), supports_(supports), devices_(devices) {}
  std::string Name() const override { return name_; }
  std::string Description() const override { return "fake"; }
  std::vector<DeviceDescription> Devices() const override {
    std::vector<DeviceDescription> out(devices_);
    for (int i = 0; i < devices_; ++i) {
      out[i].kind = "cuda";
      out[i].index = i;
    }
    return out;
  }
  BackendSupport Support() const override {
    BackendSupport s;
    s.auto_priority = priority_;
    return s;
  }
  absl::Status CheckSupported(const Problem&) const override {
    return supports_ ? absl::OkStatus() : absl::FailedPreconditionError(name_ + " lacks something");
  }
  uint64_t EstimateBytes(const Problem&) const override { return 0; }
  absl::StatusOr<std::unique_ptr<Workload>> Prepare(const Problem&, int) override {
    return absl::UnimplementedError("selection tests never prepare");
  }

 private:
  std::string name_;
  int priority_;
  bool supports_;
  int devices_;
};

BackendList Make(std::vector<std::tuple<std::string, int, bool, int>> specs) {
  BackendList list;
  for (auto& [name, priority, supports, devices] : specs) {
    list.push_back(std::make_unique<FakeBackend>(name, priority, supports, devices));
  }
  return list;
}

TEST(BackendSelectTest, AutoPicksHighestPrioritySupporting) {
  const BackendList list =
      Make({{"slow", 0, true, 1}, {"fast", 10, false, 1}, {"medium", 5, true, 1}});
  for (const char* name : {"auto", ""}) {
    auto chosen = SelectBackend(list, name, Problem(), std::nullopt);
    ASSERT_TRUE(chosen.ok());
    EXPECT_EQ((*chosen)->Name(), "medium");
  }
  // A device index only the low-priority backend has.
  const BackendList uneven = Make({{"one", 10, true, 1}, {"two", 0, true, 2}});
  auto chosen = SelectBackend(uneven, "auto", Problem(), 1);
  ASSERT_TRUE(chosen.ok());
  EXPECT_EQ((*chosen)->Name(), "two");
}

TEST(BackendSelectTest, AutoWithNoneSupportingListsReasons) {
  const BackendList list = Make({{"a", 0, false, 1}, {"b", 1, false, 1}});
  auto chosen = SelectBackend(list, "auto", Problem(), std::nullopt);
  ASSERT_EQ(chosen.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(chosen.status().message()), HasSubstr("a lacks something"));
  EXPECT_THAT(std::string(chosen.status().message()), HasSubstr("b lacks something"));
}

TEST(BackendSelectTest, NamedBackend) {
  const BackendList list = Make({{"a", 0, true, 2}, {"b", 1, false, 1}});
  auto a = SelectBackend(list, "a", Problem(), 1);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->Name(), "a");
  EXPECT_EQ(SelectBackend(list, "b", Problem(), std::nullopt).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SelectBackend(list, "a", Problem(), 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto unknown = SelectBackend(list, "c", Problem(), std::nullopt);
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("known: auto, a, b"));
  EXPECT_EQ(SelectBackend(list, "auto", Problem(), 5).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Found by tests/fuzz: a 300 KB backend name came back in full in the status message, which gRPC
// clients cannot read (and which failed other calls on the same connection).
TEST(BackendSelectTest, UnknownNamesAreQuotedShortAndEscaped) {
  const BackendList list = Make({{"a", 0, true, 1}});
  const absl::Status long_name = CheckBackendName(list, std::string(300000, 'x'));
  ASSERT_EQ(long_name.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(long_name.message()), HasSubstr("... (300000 bytes)"));
  EXPECT_LT(long_name.message().size(), 200u);
  const absl::Status control = CheckBackendName(list, std::string("a\n\0z", 4));
  EXPECT_THAT(std::string(control.message()), HasSubstr("\"a\\n\\x00z\""));
}

TEST(BackendSelectTest, DeviceKey) {
  DeviceDescription d;
  d.kind = "cpu";
  d.index = 0;
  EXPECT_EQ(DeviceKey(d), "cpu:0");
}

}  // namespace
}  // namespace attnbench::server
