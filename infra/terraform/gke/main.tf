# GKE node pools for Step-Audio. Labels/taints match charts/stepaudio/values-stepaudio.yaml.
#   terraform -chdir=infra/terraform/gke init && terraform -chdir=infra/terraform/gke apply \
#     -var project=my-proj -var cluster=my-cluster -var location=us-central1
terraform {
  required_version = ">= 1.5"
  required_providers {
    google = { source = "hashicorp/google", version = "~> 6.0" }
  }
}

variable "project" { type = string }
variable "cluster" { type = string }
variable "location" { type = string }
variable "gpu_node_locations" {
  type    = list(string)
  default = []
}
variable "gpu_machine_type" {
  type    = string
  default = "a3-highgpu-8g" # 8x H100 80GB; Triton TP=4 needs 4 GPUs on one node
}
variable "gpu_type" {
  type    = string
  default = "nvidia-h100-80gb"
}
variable "gpus_per_node" {
  type    = number
  default = 8
}
variable "gpu_max_nodes" {
  type    = number
  default = 4
}

provider "google" {
  project = var.project
}

resource "google_container_node_pool" "cpu" {
  name     = "stepaudio-cpu"
  cluster  = var.cluster
  location = var.location
  autoscaling {
    total_min_node_count = 2
    total_max_node_count = 20
  }
  node_config {
    machine_type = "c3-standard-8"
    labels       = { "stepaudio.ai/pool" = "cpu" }
    workload_metadata_config { mode = "GKE_METADATA" }
    shielded_instance_config { enable_secure_boot = true }
  }
  management {
    auto_repair  = true
    auto_upgrade = true
  }
}

resource "google_container_node_pool" "gpu" {
  name           = "stepaudio-gpu"
  cluster        = var.cluster
  location       = var.location
  node_locations = length(var.gpu_node_locations) > 0 ? var.gpu_node_locations : null
  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.gpu_max_nodes
  }
  node_config {
    machine_type = var.gpu_machine_type
    labels       = { "stepaudio.ai/pool" = "gpu" }
    # GKE adds the nvidia.com/gpu=present:NoSchedule taint to GPU nodes itself; declared here so the
    # pool is explicit. The chart tolerates key nvidia.com/gpu with operator Exists (any value).
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }
    guest_accelerator {
      type  = var.gpu_type
      count = var.gpus_per_node
      gpu_driver_installation_config {
        # LATEST driver installed by GKE; set to INSTALLATION_DISABLED when the NVIDIA GPU operator installs it
        gpu_driver_version = "LATEST"
      }
    }
    ephemeral_storage_local_ssd_config { local_ssd_count = 16 }
    workload_metadata_config { mode = "GKE_METADATA" }
    shielded_instance_config { enable_secure_boot = true }
  }
  management {
    auto_repair  = true
    auto_upgrade = false # GPU node upgrades are planned: they restart Triton (minutes of engine load)
  }
  upgrade_settings {
    max_surge       = 0
    max_unavailable = 1
  }
}

output "gpu_pool_label" { value = "stepaudio.ai/pool=gpu" }
