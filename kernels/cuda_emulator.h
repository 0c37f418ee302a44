/* cuda_emulator.h: just enough of CUDA C++ for g++ to compile minifcrn's
 * kernels, unchanged, into a CPU shared library (see minifcrn/backend/emulated.py):
 *
 *     g++ -x c++ -include cuda_emulator.h -shared -fPIC conv.cu launchers.cpp
 *
 * It
 *  - erases the CUDA function qualifiers (__global__, __device__, __host__,
 *    __forceinline__ becomes inline): a kernel is a plain C++ function;
 *  - declares the built-in index variables threadIdx, blockIdx, blockDim and
 *    gridDim as thread_local globals, which emulate_launch() sets before it
 *    runs each simulated thread;
 *  - puts the device functions the kernels call (min, max, isnan) in the global
 *    namespace, where CUDA has them.
 *
 * The threads of a grid run one after another, block by block, x fastest.  That
 * is one of the schedules a GPU may pick, so it is faithful for kernels whose
 * threads never wait for one another.  Hence no __shared__, __syncthreads,
 * atomics or warp intrinsics here: a kernel using them fails to compile.
 */
#pragma once

#include <algorithm>
#include <cmath>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

using std::isnan;
using std::max;
using std::min;

/* Run body() once for every thread of a grid of grid[0..2] blocks of
 * block[0..2] threads, with the index variables set as the GPU would. */
template <typename Body>
inline void emulate_launch(const unsigned int grid[3], const unsigned int block[3], Body body)
{
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    for (unsigned int bz = 0; bz < grid[2]; ++bz)
        for (unsigned int by = 0; by < grid[1]; ++by)
            for (unsigned int bx = 0; bx < grid[0]; ++bx)
                for (unsigned int tz = 0; tz < block[2]; ++tz)
                    for (unsigned int ty = 0; ty < block[1]; ++ty)
                        for (unsigned int tx = 0; tx < block[0]; ++tx) {
                            blockIdx = {bx, by, bz};
                            threadIdx = {tx, ty, tz};
                            body();
                        }
}
