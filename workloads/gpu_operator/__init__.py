"""The NVIDIA GPU Operator workload: its component and the schemas of the configuration finml hands it."""

from workloads.gpu_operator.component import (  # noqa: F401
    CHART_VERSION, DEVICE_PLUGIN_CONFIG_LABEL, MIG_CONFIG_MAP, GpuOperator, GpuOperatorArgs, device_plugin_config,
    operator_values, time_slicing_config_name, validate_mig_parted, validate_values,
)
