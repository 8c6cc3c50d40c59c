# NixOS module for MCP's daemons.
#
#   imports = [ ./nixos-module ];
#   services.mcp.agent = { enable = true; package = mcp; configFile = ./agent.toml; };
#   services.mcp.master = { enable = true; package = mcp; configFile = ./master.toml; };
#
# The daemons themselves (mcp-agent, mcp-master) are being built; this module
# declares how they run: as the unprivileged `mcp` user with rootless podman
# (subuid/subgid ranges provisioned here, as the design review asks), owning
# /srv, with the agent's database backed up daily (`mcp-agent snapshot`).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.mcp;
  inherit (lib) mkEnableOption mkOption mkIf types;
in
{
  options.services.mcp = {
    agent = {
      enable = mkEnableOption "the MCP node agent";
      package = mkOption {
        type = types.package;
        description = "Package providing bin/mcp-agent.";
      };
      configFile = mkOption {
        type = types.path;
        description = "agent.toml (binds to the overlay address only).";
      };
      backupCalendar = mkOption {
        type = types.str;
        default = "*-*-* 02:00:00 UTC";
        description = "When `mcp-agent snapshot` backs up the agent database.";
      };
    };
    master = {
      enable = mkEnableOption "the MCP master (reconciler)";
      package = mkOption {
        type = types.package;
        description = "Package providing bin/mcp-master.";
      };
      configFile = mkOption {
        type = types.path;
        description = "master.toml.";
      };
    };
  };

  config = lib.mkMerge [
    (mkIf (cfg.agent.enable || cfg.master.enable) {
      users.users.mcp = {
        isSystemUser = true;
        group = "mcp";
        home = "/var/lib/mcp";
        createHome = true;
        # Rootless podman maps container UIDs through these ranges; files in
        # /srv/<service>/ must be accessible to the mapped UIDs.
        subUidRanges = [{ startUid = 100000; count = 65536; }];
        subGidRanges = [{ startGid = 100000; count = 65536; }];
        linger = true;
      };
      users.groups.mcp = { };
      virtualisation.podman.enable = true;
      systemd.tmpfiles.rules = [ "d /srv 0755 mcp mcp -" ];
    })

    (mkIf cfg.agent.enable {
      systemd.services.mcp-agent = {
        description = "MCP node agent";
        wantedBy = [ "multi-user.target" ];
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        path = [ pkgs.podman ];
        serviceConfig = {
          User = "mcp";
          ExecStart = "${cfg.agent.package}/bin/mcp-agent --config ${cfg.agent.configFile}";
          Restart = "always";
          RestartSec = 2;
          StateDirectory = "mcp";
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ReadWritePaths = [ "/srv" "/var/lib/mcp" ];
        };
      };
      systemd.services.mcp-agent-backup = {
        description = "Back up the MCP agent database";
        serviceConfig = {
          Type = "oneshot";
          User = "mcp";
          ExecStart = "${cfg.agent.package}/bin/mcp-agent --config ${cfg.agent.configFile} snapshot";
        };
      };
      systemd.timers.mcp-agent-backup = {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.agent.backupCalendar;
          RandomizedDelaySec = "5m";
          Persistent = true;
        };
      };
    })

    (mkIf cfg.master.enable {
      systemd.services.mcp-master = {
        description = "MCP master";
        wantedBy = [ "multi-user.target" ];
        after = [ "network-online.target" "mcp-agent.service" ];
        wants = [ "network-online.target" ];
        path = [ pkgs.git ];
        serviceConfig = {
          User = "mcp";
          ExecStart = "${cfg.master.package}/bin/mcp-master --config ${cfg.master.configFile}";
          Restart = "always";
          RestartSec = 2;
          StateDirectory = "mcp";
          NoNewPrivileges = true;
        };
      };
    })
  ];
}
