set terminal pngcairo size 800,500 font 'sans,10'
set output 'drift.png'
set datafile separator ','
set title 'Change of the unit means between probes, in units of their std' noenhanced
set xlabel 'step'
set ylabel 'RMS drift (stds)'
set grid
set key below noenhanced
set format x '%g'
set logscale y
plot 'probes.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / input of layer 3' ? column(5) : 1/0) with lines lw 2 title 'BN before ReLU / input of layer 3', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / input of layer 6' ? column(5) : 1/0) with lines lw 2 title 'BN before ReLU / input of layer 6', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'BN after ReLU / input of layer 3' ? column(5) : 1/0) with lines lw 2 title 'BN after ReLU / input of layer 3', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'BN after ReLU / input of layer 6' ? column(5) : 1/0) with lines lw 2 title 'BN after ReLU / input of layer 6', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'no BN / input of layer 2' ? column(5) : 1/0) with lines lw 2 title 'no BN / input of layer 2', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'no BN / input of layer 4' ? column(5) : 1/0) with lines lw 2 title 'no BN / input of layer 4'
