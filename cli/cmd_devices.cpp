// llmcli devices [--json]: the devices this build can see and which `auto` picks.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "backends/registry.h"
#include "cli/common.h"

namespace llm::cli {

void register_devices(CLI::App& app) {
  auto* cmd = app.add_subcommand("devices", "List detected devices and which --device auto picks");
  auto* json = cmd->add_flag("--json", "Print JSON");
  cmd->callback([json]() {
    const auto devices = list_devices();
    const std::string pick = auto_device_id();
    if (*json) {
      nlohmann::json j;
      j["auto"] = pick;
      j["backends"] = compiled_backends();
      j["devices"] = nlohmann::json::array();
      for (const auto& d : devices)
        j["devices"].push_back({{"id", d.info.id},
                                {"name", d.info.name},
                                {"type", d.info.type},
                                {"total_memory", d.info.total_memory},
                                {"free_memory", d.info.free_memory},
                                {"details", d.info.details},
                                {"can_run_models", d.can_run_models}});
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("%-10s %-14s %-12s %-40s %s\n", "id", "type", "memory", "name", "details");
    for (const auto& d : devices) {
      std::string details = d.info.details;
      if (!d.can_run_models) details += " (backend cannot run models yet)";
      std::printf("%-10s %-14s %-12s %-40s %s\n", d.info.id.c_str(), d.info.type.c_str(),
                  format_bytes(d.info.total_memory).c_str(), d.info.name.c_str(), details.c_str());
    }
    std::printf("auto: %s\n", pick.c_str());
  });
}

}  // namespace llm::cli
