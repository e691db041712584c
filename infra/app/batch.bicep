// Azure Batch account + the GPU pool that runs `python -m gpu_batch.worker` in the worker container.
//
// * Data-plane authentication is Entra ID only (allowedAuthenticationModes ['AAD']): the Functions app calls Batch
//   with its managed identity and the "Azure Batch Job Submitter" role (app/rbac.bicep); no account keys are used.
// * The pool is container-enabled (DockerCompatible) on the Batch-supported GPU container image family
//   (microsoft-dsvm ubuntu-hpc, with NVIDIA drivers and the NVIDIA container runtime preinstalled;
//   batch-docker-container-workloads.md "Supported virtual machine images"). Batch gives container tasks the GPUs
//   itself on GPU sizes, so tasks must not pass `--gpus` (same article, "Container settings for the task").
// * The nodes' user-assigned identity pulls the worker image from ACR (containerRegistries.identityReference, with
//   AcrPull on the registry), and is the identity the worker's code uses for storage and Key Vault (AZURE_CLIENT_ID
//   in each task, set by gpu_batch/pool/azure_batch.py from TRAPBATCH_WORKER_IDENTITY).
// * No image is prefetched (containerImageNames is empty): the task names the image (TRAPBATCH_WORKER_IMAGE), so a new
//   worker tag changes an app setting and the pool's start task (both updatable in place: batch-pool-update-properties.md;
//   a changed start task runs on nodes that join or restart), never the pool's image settings (those cannot be
//   changed on a pool that has nodes). Each node pulls the image once, for its start task.
// * The start task runs the node-resident worker (gpu_batch/worker/resident.py) in the worker image when
//   `residentWorker` is true (the app's TRAPBATCH_WORKER_RESIDENT follows the same parameter): a server that keeps
//   torch and the model loaded, so each shard's task (`python -m gpu_batch.worker.client`) pays start-up once per
//   node instead of once per shard. Relied on (StartTask and TaskContainerSettings in the 2024-07-01 types):
//   waitForSuccess false lets tasks run while the start task still runs; a container start task gets everything below
//   AZ_BATCH_NODE_ROOT_DIR mapped in, as each task container does, so the server's socket in the node-shared folder
//   (AZ_BATCH_NODE_SHARED_DIR/trapbatch/resident/) is the one the task's client finds; same user as the tasks (pool
//   auto-user, non-admin), since the socket's folder is 0700. A task that starts before the server listens (the start
//   task may still be pulling the image) starts a server in its own container, which ends with it; the start task's
//   server stands by meanwhile and takes the socket over (resident.py _stand_by). A node that joined before a new
//   worker tag keeps the old server until it is reimaged: that server refuses shards of other worker code and steps
//   aside, and the client then runs the shard itself (resident_protocol.py), as it does if the start task's container
//   has no GPU.
//   With `residentWorker` false the start task only pulls the image and exits. With `residentCompile` as well, the server
//   runs every shard's network through torch.compile (`serve --compile`): the node's first shard pays the compile
//   (26-49 s on an H200), later ones run ~16 % faster than eager (bench/RESULTS.md, 2026-12-04).
// * Autoscale: one shard per node (taskSlotsPerNode 1); the pool follows the number of pending (active + running)
//   tasks, filling Spot (low-priority) nodes first up to `maxNodes * spotPercent / 100` and dedicated nodes after
//   that, and never removes a node while it runs a task (taskcompletion). With no work it scales to zero.
//   A preempted Spot node's task is requeued by Batch (batch-spot-vms.md); trapbatch's results are flushed every few
//   seconds, so the retry resumes where it stopped.

param accountName string
param poolId string = 'gpu'
param location string = resourceGroup().location
param tags object = {}
@description('GPU VM size of the pool (quota per VM family: docs/deploy.md).')
param vmSize string = 'Standard_NC4as_T4_v3'
@minValue(1)
@description('Most nodes the pool may have, Spot and dedicated together.')
param maxNodes int = 8
@minValue(0)
@maxValue(100)
@description('Share of maxNodes that may be Spot (low-priority) nodes, in percent; 0 = dedicated only.')
param spotPercent int = 75
@description('ARM resource id of the nodes\' user-assigned identity.')
param nodeIdentityId string
@description('Login server of the registry holding the worker image, e.g. crabc.azurecr.io.')
param registryServer string
param imagePublisher string = 'microsoft-dsvm'
param imageOffer string = 'ubuntu-hpc'
// ubuntu-hpc 2404 with the 24.04 node agent: Batch ends support for batch.node.ubuntu 22.04 on 2027-06-30 and names
// microsoft-dsvm:ubuntu-hpc:2404 as the move for container and HPC pools (Azure/Batch#200). Its build
// (Azure/azhpc-images distros/ubuntu24.04/install.sh, versions.json of 2026-07-29) installs the NVIDIA driver
// (580.173.02, CUDA 13.0), Docker and the NVIDIA container toolkit, as the 2204 build did. The image of a pool that
// has nodes cannot change (batch-pool-update-properties.md: deploymentConfiguration needs 0 dedicated and 0 Spot
// nodes), so a redeploy over a 2204 pool succeeds only while the pool has scaled to zero: docs/deploy.md.
param imageSku string = '2404'
param nodeAgentSkuId string = 'batch.node.ubuntu 24.04'
@description('The worker image, as the tasks name it (TRAPBATCH_WORKER_IMAGE): the start task runs it too.')
param workerImage string

@description('Run the node-resident worker from the start task (TRAPBATCH_WORKER_RESIDENT in the app).')
param residentWorker bool = false

@description('The resident worker compiles every shard\'s network (torch.compile), paid once per node; needs residentWorker.')
param residentCompile bool = false

// The image's interpreter by its absolute path (gpu_batch/Dockerfile's venv; gpu_batch/pool/azure_batch.py WORKER_PYTHON):
// batch-docker-container-workloads.md, "Troubleshoot container tasks": "Specify an absolute path in the task command line".
var residentCommand = residentCompile ? '/opt/venv/bin/python -m gpu_batch.worker.resident serve --idle-exit inf --compile' : '/opt/venv/bin/python -m gpu_batch.worker.resident serve --idle-exit inf'

@description('OS disk size of each node: the ubuntu-hpc image keeps Docker\'s data (the ~10 GB worker image) on it.')
param osDiskSizeGB int = 128

var maxSpotNodes = maxNodes * spotPercent / 100
var maxDedicatedNodes = maxNodes - maxSpotNodes
// Autoscale formula language: batch-automatic-scaling.md. $PendingTasks = active + running tasks; when fewer than
// 70% of the last 5 minutes' samples exist (a new pool), the last sample alone decides.
var autoScaleFormula = '$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5);\n$tasks = $samples < 70 ? max(0, $PendingTasks.GetSample(1)) : max($PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 5)));\n$spot = min(${maxSpotNodes}, $tasks);\n$TargetLowPriorityNodes = $spot;\n$TargetDedicatedNodes = min(${maxDedicatedNodes}, max(0, $tasks - $spot));\n$NodeDeallocationOption = taskcompletion;'

resource account 'Microsoft.Batch/batchAccounts@2024-07-01' = {
  // checkov:skip=CKV_AZURE_76:Batch encrypts with Microsoft-managed keys by default; a customer-managed key would need a Key Vault key, its rotation and a system identity on the account, for task metadata that holds only blob names.
  name: accountName
  location: location
  tags: tags
  properties: {
    poolAllocationMode: 'BatchService'
    allowedAuthenticationModes: [
      'AAD'
    ]
    publicNetworkAccess: 'Enabled'
  }
}

resource pool 'Microsoft.Batch/batchAccounts/pools@2024-07-01' = {
  parent: account
  name: poolId
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${nodeIdentityId}': {}
    }
  }
  properties: {
    displayName: 'trapbatch GPU workers'
    vmSize: vmSize
    taskSlotsPerNode: 1
    startTask: {
      commandLine: residentWorker ? residentCommand : '/opt/venv/bin/python -c pass'
      containerSettings: {
        imageName: workerImage
        containerRunOptions: '--rm --shm-size 8g'
        workingDirectory: 'ContainerImageDefault'
      }
      userIdentity: {
        autoUser: {
          scope: 'Pool'
          elevationLevel: 'NonAdmin'
        }
      }
      waitForSuccess: false
      maxTaskRetryCount: 3
    }
    taskSchedulingPolicy: {
      nodeFillType: 'Pack'
    }
    interNodeCommunication: 'Disabled'
    targetNodeCommunicationMode: 'Simplified'
    deploymentConfiguration: {
      virtualMachineConfiguration: {
        imageReference: {
          publisher: imagePublisher
          offer: imageOffer
          sku: imageSku
          version: 'latest'
        }
        nodeAgentSkuId: nodeAgentSkuId
        osDisk: {
          diskSizeGB: osDiskSizeGB
        }
        containerConfiguration: {
          type: 'DockerCompatible'
          containerRegistries: [
            {
              registryServer: registryServer
              identityReference: {
                resourceId: nodeIdentityId
              }
            }
          ]
        }
      }
    }
    scaleSettings: {
      autoScale: {
        evaluationInterval: 'PT5M'
        formula: autoScaleFormula
      }
    }
  }
}

output accountName string = account.name
output accountEndpoint string = 'https://${account.properties.accountEndpoint}'
output poolId string = pool.name
output maxSpotNodes int = maxSpotNodes
output maxDedicatedNodes int = maxDedicatedNodes
