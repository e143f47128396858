#!/usr/bin/env bash
# TorchRL yardstick: TorchRL's own PPO-loss tests (TestPPO + the singleton-batch ESS test
# from test_ppo.py, and the 15 PPO tests of test_loss_module.py), with ppokit's
# PPOLoss / ClipPPOLoss / KLPENPPOLoss swapped in by conftest.py.
#
#   ./run.sh            ppokit swapped in (expect 1810 of 1816 as of 2026-11-30)
#   ./run.sh torchrl    TorchRL's own classes (expect 1816 of 1816: checks the selection)
#   extra arguments after the first go to pytest (e.g. ./run.sh ppokit -n 2 -rf)
#
# PYTHON defaults to /work/main/.venv/bin/python (torchrl 0.14.1, tensordict 0.14.3,
# ppokit installed editable).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
PYTHON="${PYTHON:-/work/main/.venv/bin/python}"
mode="${1:-ppokit}"; shift || true
case "$mode" in
  ppokit)  export PPOKIT_SWAP=1 ;;
  torchrl) export PPOKIT_SWAP=0 ;;
  *) echo "usage: $0 [ppokit|torchrl] [pytest args...]" >&2; exit 2 ;;
esac
for f in test_ppo.py test_loss_module.py _objectives_common.py; do
  [[ -f $f ]] || { echo "missing $f: copy it from pytorch/rl test/objectives/ (see README.md)" >&2; exit 2; }
done

LM=test_loss_module.py
selection=(
  test_ppo.py::TestPPO
  test_ppo.py::test_ppo_ess_preserves_feature_shape_for_singleton_batch
  $LM::TestMakeValueEstimator::test_make_value_estimator_with_gae_class
  $LM::TestMakeValueEstimator::test_make_value_estimator_with_gae_instance
  $LM::TestSchedulableBuffers::test_float_assignment
  $LM::TestSchedulableBuffers::test_int_assignment
  $LM::TestSchedulableBuffers::test_device_preservation
  $LM::TestSchedulableBuffers::test_tensor_assignment_still_works
  $LM::TestSchedulableBuffers::test_inheritance_merging
  $LM::TestSchedulableBuffers::test_optional_none_buffer
  $LM::TestSchedulableBuffers::test_state_dict_roundtrip
  $LM::TestPrepareValueEstimatorKwargs::test_ppo_enum_dispatch
)
exec "$PYTHON" -m pytest -q -p no:randomly "${selection[@]}" "$@"
